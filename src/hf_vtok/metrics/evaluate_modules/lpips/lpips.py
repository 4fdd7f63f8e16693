"""LPIPS (VGG16, v0.1 heads) of reconstructions against their originals, averaged.

hf_vtok's `evaluate` module "lpips" (hf_vtok must be installed: pip install hf_vtok):

    evaluate.load(hf_vtok.metrics.evaluate_module_path("lpips"))

The implementation is ``hf_vtok.metrics.evaluate_metrics``.
"""

from hf_vtok.metrics.evaluate_metrics import Lpips  # noqa: F401  (the module class evaluate.load finds)
