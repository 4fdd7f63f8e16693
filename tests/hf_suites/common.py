"""What every thin file here shares: the suites' classes and the tester of a tiny tokenizer.

Importing this module skips the importing test module when the suites are not fetched (see
``transformers_suites.py``).
"""

import copy

from .transformers_suites import suite

_modeling, _configuration, _image_processing = (
    suite(name) for name in ("test_modeling_common", "test_configuration_common", "test_image_processing_common")
)
ModelTesterMixin = _modeling.ModelTesterMixin
ConfigTester = _configuration.ConfigTester
ImageProcessingTestMixin = _image_processing.ImageProcessingTestMixin
ImageProcessingTester = _image_processing.ImageProcessingTester


class TokenizerModelTester:
    """The ``model_tester`` ``ModelTesterMixin`` reads: a tiny config, fresh inputs, and the sizes of the states
    ``forward(output_hidden_states=True)`` returns (``hidden_states``: the encoder's, embedding output first)."""

    def __init__(
        self,
        parent,
        config,
        make_inputs,
        *,
        hidden_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        seq_length: int,
        batch_size: int = 2,
        is_training: bool = True,
    ):
        self.parent = parent
        self.config = config
        self.make_inputs = make_inputs  # batch_size -> dict of forward inputs
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.seq_length = seq_length
        self.batch_size = batch_size
        self.is_training = is_training

    def get_config(self):
        return copy.deepcopy(self.config)

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), self.make_inputs(self.batch_size)
