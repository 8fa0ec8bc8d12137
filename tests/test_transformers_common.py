"""transformers' own common model tests on LastViTModel, LastViTForImageClassification and LastViTBackbone.

The tester mirrors transformers' Dinov2WithRegisters tester (same sizes, dropout, 2 registers, the default
sdpa attention) with LaSt-ViT's default LazyStrike pooling; the skips are ViT's and Dinov2WithRegisters'
own: no `inputs_embeds` (an image model). The mixins come from the installed transformers version's sdist
(see `tests/transformers_common.py`): fetched once with pip, then offline.
"""

import subprocess
import unittest

import pytest
import torch
from torch import nn
from transformers.models.auto import modeling_auto

from modeling_lastvit import LastViTBackbone, LastViTConfig, LastViTForImageClassification, LastViTModel

pytest.importorskip("parameterized", reason="transformers' common tests need `parameterized` (test extra)")
try:
    from .transformers_common import load

    test_modeling_common, test_backbone_common = load()
except (OSError, subprocess.SubprocessError) as error:  # no network on the first run: pip could not fetch
    pytest.skip(f"transformers' common tests are not available: {error}", allow_module_level=True)

ModelTesterMixin = test_modeling_common.ModelTesterMixin
BackboneTesterMixin = test_backbone_common.BackboneTesterMixin
floats_tensor, ids_tensor = test_modeling_common.floats_tensor, test_modeling_common.ids_tensor


@pytest.fixture(autouse=True)
def _lastvit_in_the_auto_mapping_names(monkeypatch):
    """The mixins pick labels and skip heads by the class names in transformers' auto mappings, which list only
    in-tree models; list LastViT's as an in-tree model would be (for the duration of each test)."""
    for names, class_name in (
        (modeling_auto.MODEL_MAPPING_NAMES, "LastViTModel"),
        (modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, "LastViTForImageClassification"),
        (modeling_auto.MODEL_FOR_BACKBONE_MAPPING_NAMES, "LastViTBackbone"),
    ):
        monkeypatch.setitem(names, "lastvit", class_name)


class LastViTModelTester:
    def __init__(self, parent, batch_size=13, image_size=30, patch_size=2, num_register_tokens=2, num_labels=10):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = 3
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_register_tokens = num_register_tokens
        self.type_sequence_label_size = num_labels
        self.is_training = True
        num_patches = (image_size // patch_size) ** 2
        self.seq_length = num_patches + 1 + num_register_tokens

    def get_config(self) -> LastViTConfig:
        return LastViTConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            num_register_tokens=self.num_register_tokens,
            num_labels=self.type_sequence_label_size,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.type_sequence_label_size)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class LastViTModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (LastViTModel, LastViTForImageClassification, LastViTBackbone)
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = LastViTModelTester(self)

    @unittest.skip(reason="LastViT does not use inputs_embeds (skipped for ViT and Dinov2WithRegisters too)")
    def test_inputs_embeds(self):
        pass

    def test_model_get_set_embeddings(self):  # ViT's and Dinov2WithRegisters' version: the patch embedding
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Module)
            output_embeddings = model.get_output_embeddings()
            self.assertTrue(output_embeddings is None or isinstance(output_embeddings, nn.Linear))

    def test_model(self):
        config, pixel_values, _ = self.model_tester.prepare_config_and_inputs()
        model = LastViTModel(config).eval()
        with torch.no_grad():
            result = model(pixel_values)
        tester = self.model_tester
        self.assertEqual(result.last_hidden_state.shape, (tester.batch_size, tester.seq_length, tester.hidden_size))
        self.assertEqual(result.pooler_output.shape, (tester.batch_size, tester.hidden_size))

    def test_for_image_classification(self):
        config, pixel_values, labels = self.model_tester.prepare_config_and_inputs()
        model = LastViTForImageClassification(config).eval()
        with torch.no_grad():
            result = model(pixel_values, labels=labels)
        self.assertEqual(
            result.logits.shape, (self.model_tester.batch_size, self.model_tester.type_sequence_label_size)
        )


class LastViTBackboneTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (LastViTBackbone,)
    config_class = LastViTConfig
    has_attentions = False  # as for Dinov2WithRegistersBackbone

    def setUp(self):
        self.model_tester = LastViTModelTester(self)
