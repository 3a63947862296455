"""Heads of the pretext tasks: the patch-set classifier (late fusion keeps the order), the context
encoder's decoder and discriminator."""

import torch

from selfsup.heads.classifier import PatchSetClassifier
from selfsup.heads.decoder import ConvDecoder, decoder_plan
from selfsup.heads.discriminator import ConvDiscriminator


def test_patch_set_classifier_sees_the_order_of_its_patches():
    torch.manual_seed(0)
    head = PatchSetClassifier(6, num_patches=3, patch_dim=5, hidden_dim=7, num_classes=4).eval()
    features = torch.randn(2, 3, 6)
    assert head(features).shape == (2, 4)
    assert not torch.allclose(head(features), head(features[:, [1, 0, 2]]))


def test_decoder_and_discriminator_shapes():
    assert decoder_plan(28) == (7, 2) and decoder_plan(32) == (4, 3) and decoder_plan(128) == (4, 5)
    for size in (28, 32, 27):
        decoder = ConvDecoder(10, 3, size, width=32)
        assert decoder(torch.randn(2, 10)).shape == (2, 3, size, size)
        assert ConvDiscriminator(3, size, width=8)(torch.randn(2, 3, size, size)).shape == (2,)
