"""Inception Score of generated images (mean and std over splits).

hf_vtok's `evaluate` module "inception_score" (hf_vtok must be installed: pip install hf_vtok):

    evaluate.load(hf_vtok.metrics.evaluate_module_path("inception_score"))

The implementation is ``hf_vtok.metrics.evaluate_metrics``.
"""

from hf_vtok.metrics.evaluate_metrics import InceptionScore  # noqa: F401  (the module class evaluate.load finds)
