"""Stand-in of transformers' ``tests/utils/test_configuration_utils.py`` (not in its sdist)."""

import dataclasses

from transformers import PreTrainedConfig

# A value other than the default for every attribute a ``PreTrainedConfig`` takes; ``ConfigTester`` builds a config
# from them and checks that each one is kept (``dtype`` is compared with ``torch.float16``).
config_common_kwargs = {
    "architectures": ["ToyModel"],
    "output_hidden_states": True,
    "output_attentions": True,
    "return_dict": False,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "is_encoder_decoder": True,
    "id2label": {0: "zero", 1: "one"},
    "label2id": {"zero": 0, "one": 1},
    "problem_type": "regression",
}

_missing = {field.name for field in dataclasses.fields(PreTrainedConfig)} - set(config_common_kwargs)
_missing.discard("transformers_version")  # written by save_pretrained, not a setting
if _missing:
    raise ImportError(f"config_common_kwargs has no value for PreTrainedConfig's {sorted(_missing)}: add them")
