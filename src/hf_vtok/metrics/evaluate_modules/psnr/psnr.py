"""PSNR (dB) of reconstructions against their originals, per image in [0, 1], averaged.

hf_vtok's `evaluate` module "psnr" (hf_vtok must be installed: pip install hf_vtok):

    evaluate.load(hf_vtok.metrics.evaluate_module_path("psnr"))

The implementation is ``hf_vtok.metrics.evaluate_metrics``.
"""

from hf_vtok.metrics.evaluate_metrics import Psnr  # noqa: F401  (the module class evaluate.load finds)
