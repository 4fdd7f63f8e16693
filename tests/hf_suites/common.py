"""What every thin file here shares: the suites' classes and the tester of a tiny tokenizer.

Importing this module skips the importing test module when the suites are not fetched (see
``transformers_suites.py``).
"""

import copy
import unittest

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
        expected_num_hidden_layers: int | None = None,
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
        if expected_num_hidden_layers is not None:  # else num_hidden_layers + 1 (the embedding output first)
            self.expected_num_hidden_layers = expected_num_hidden_layers

    def get_config(self):
        return copy.deepcopy(self.config)

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), self.make_inputs(self.batch_size)


# Reasons of the tests the thin files skip (listed in the README); each holds for every tokenizer here.
NO_ATTENTION_WEIGHTS = (
    "the tokenizers attend through SDPA and return no attention weights (transformers' has_attentions=False)"
)
NO_TEXT_MODEL = "no text model: a tokenizer has no token vocabulary to resize"
NO_LOSS = (
    "an AutoModel base class without a loss: forward returns the reconstruction and the training losses (L1, "
    "LPIPS, GAN) are the trainer's (transformers skips these tests for its MODEL_MAPPING classes)"
)
NO_TORCHVISION = "hf_vtok's processors are PIL-only by design: the project never depends on torchvision"


class TokenizerModelTestMixin:
    """What every tokenizer's ``ModelTesterMixin`` class shares: no attention weights, no vocabulary, and the vision
    models' version of the embedding test (the input embedding is the module named by ``input_embeddings``)."""

    has_attentions = False
    test_resize_embeddings = False
    input_embeddings: str  # dotted path of the module get_input_embeddings() must return

    def test_model_get_set_embeddings(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(copy.deepcopy(config))
            embedding = model.get_input_embeddings()
            self.assertIs(embedding, model.get_submodule(self.input_embeddings))
            replacement = copy.deepcopy(embedding)
            model.set_input_embeddings(replacement)
            self.assertIs(model.get_input_embeddings(), replacement)
            self.assertIsNone(model.get_output_embeddings())

    def test_config(self):
        self.config_tester.run_common_tests()


class WithoutLossModelTestMixin:
    """An ``AutoModel`` class without a loss: the training tests do not apply (``NO_LOSS``)."""

    @unittest.skip(NO_LOSS)
    def test_training(self):
        pass

    @unittest.skip(NO_LOSS)
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass


class TokenizerImageProcessingTester(ImageProcessingTester):
    """The suite's tester for one PIL-backend processor (the suite finds classes by the test file's folder name,
    which is not a model type here): ``processor_defaults`` set its settings, images come out
    ``output_size`` squared (families with another layout override ``expected_output_image_shape``)."""

    processor_class: type
    processor_defaults: dict = {}
    output_size: int | None = None

    def __init__(self, parent, **kwargs):
        for key, value in self.processor_defaults.items():
            kwargs.setdefault(key, copy.deepcopy(value))
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        return {"pil": self.processor_class}

    def expected_output_image_shape(self, images):
        return self.num_channels, self.output_size, self.output_size


class TokenizerImageProcessingTestMixin(ImageProcessingTestMixin):
    @unittest.skip(NO_TORCHVISION)
    def test_new_models_require_torchvision_backend(self):
        pass
