"""rFID: Fréchet distance of FID-InceptionV3 features of reconstructions and originals.

hf_vtok's `evaluate` module "rfid" (hf_vtok must be installed: pip install hf_vtok):

    evaluate.load(hf_vtok.metrics.evaluate_module_path("rfid"))

The implementation is ``hf_vtok.metrics.evaluate_metrics``.
"""

from hf_vtok.metrics.evaluate_metrics import Rfid  # noqa: F401  (the module class evaluate.load finds)
