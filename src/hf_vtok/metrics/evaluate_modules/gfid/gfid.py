"""gFID: Fréchet distance of FID-InceptionV3 features of generated images and a reference.

hf_vtok's `evaluate` module "gfid" (hf_vtok must be installed: pip install hf_vtok):

    evaluate.load(hf_vtok.metrics.evaluate_module_path("gfid"))

The implementation is ``hf_vtok.metrics.evaluate_metrics``.
"""

from hf_vtok.metrics.evaluate_metrics import Gfid  # noqa: F401  (the module class evaluate.load finds)
