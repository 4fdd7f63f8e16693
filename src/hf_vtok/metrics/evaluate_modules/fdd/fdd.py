"""FDD: Fréchet distance of DINOv2 / DINOv3 class tokens of reconstructions and originals.

hf_vtok's `evaluate` module "fdd" (hf_vtok must be installed: pip install hf_vtok):

    evaluate.load(hf_vtok.metrics.evaluate_module_path("fdd"))

The implementation is ``hf_vtok.metrics.evaluate_metrics``.
"""

from hf_vtok.metrics.evaluate_metrics import Fdd  # noqa: F401  (the module class evaluate.load finds)
