"""SSIM of reconstructions against their originals (window min(H, W, 11), sigma 1.5), averaged.

hf_vtok's `evaluate` module "ssim" (hf_vtok must be installed: pip install hf_vtok):

    evaluate.load(hf_vtok.metrics.evaluate_module_path("ssim"))

The implementation is ``hf_vtok.metrics.evaluate_metrics``.
"""

from hf_vtok.metrics.evaluate_metrics import Ssim  # noqa: F401  (the module class evaluate.load finds)
