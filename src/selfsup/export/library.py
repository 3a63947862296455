"""The same encoder as a torchvision or timm model: architecture, constructor arguments, and the
weights under the library's own key names.

selfsup's ResNets are torchvision's ``ResNet`` (same keys; timm's ResNet uses them too) and its
ViTs are timm's ``VisionTransformer`` (timm's keys plus the iBOT ``mask_token``; torchvision's
``VisionTransformer`` computes the same with other names, mapped here); ``timm:<name>``
backbones hold the timm model under ``model.``. What the libraries' constructors cannot express
(the 3×3 small stem of ``resnet18-tiny``, stage widths, grey input for torchvision, a method's
wrapper around its backbone) has no equivalent, and :func:`library_model` says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from torch import Tensor, nn

from selfsup.backbones import ResNetBackbone, TimmBackbone, VisionTransformerBackbone
from selfsup.errors import ConfigError
from selfsup.evaluation import LoadedEncoder

LIBRARIES = ("torchvision", "timm")
TORCHVISION_VIT = "VisionTransformer"  # torchvision's class, built with the encoder's sizes
_VIT_ARCHITECTURES = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: "vit_base_patch16_224"}
_RESNET_LAYERS = {("BasicBlock", (2, 2, 2, 2)): "resnet18", ("BasicBlock", (3, 4, 6, 3)): "resnet34",
                  ("Bottleneck", (3, 4, 6, 3)): "resnet50"}


@dataclass
class LibraryModel:
    """An encoder as ``library``'s ``architecture`` built with ``create_args``, its weights in ``state_dict``."""

    library: str
    architecture: str
    create_args: Dict[str, Any]
    state_dict: Dict[str, Tensor]

    def build(self) -> nn.Module:
        """The library's model with these weights, returning pooled features (classifier removed)."""
        if self.library == "timm":
            import timm

            model = timm.create_model(self.architecture, pretrained=False, **self.create_args)
        else:
            import torchvision

            if self.architecture == TORCHVISION_VIT:
                model = torchvision.models.VisionTransformer(**self.create_args)
                model.heads = nn.Identity()  # the CLS token after the final LayerNorm
            else:
                model = torchvision.models.get_model(self.architecture, weights=None, **self.create_args)
                model.fc = nn.Identity()
        model.load_state_dict(self.state_dict)
        return model.eval()

    def snippet(self, weights: str) -> str:
        """One line of Python that builds the model from the file ``weights``."""
        load = f'load_state_dict(safetensors.torch.load_file("{weights}"))'
        args = ", ".join(f"{k}={v!r}" for k, v in self.create_args.items())
        if self.library == "timm":
            return (f'import timm, safetensors.torch; model = timm.create_model("{self.architecture}", '
                    f"pretrained=False, {args}); model.{load}")
        head = "heads" if self.architecture == TORCHVISION_VIT else "fc"
        return (f"import torch, torchvision, safetensors.torch; model = torchvision.models.{self.architecture}("
                f"{args}); model.{head} = torch.nn.Identity(); model.{load}")


def library_model(loaded: LoadedEncoder, library: str) -> LibraryModel:
    """``loaded``'s encoder as a ``library`` model, or a one-line :class:`ConfigError` saying why not."""
    reason = _no_equivalent(loaded, library)
    if reason is not None:
        raise ConfigError(f"backbone '{loaded.backbone}' has no {library} equivalent ({reason})")
    encoder = loaded.encoder
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    if isinstance(encoder, ResNetBackbone):
        architecture = _resnet_architecture(encoder)
        if library == "torchvision":
            return LibraryModel(library, architecture, {}, state)
        return LibraryModel(library, architecture, {"num_classes": 0, "in_chans": encoder.conv1.in_channels}, state)
    if isinstance(encoder, VisionTransformerBackbone):
        state.pop("mask_token")  # iBOT's, used only under masks: timm's and torchvision's ViTs have none
        if library == "torchvision":
            args = {"image_size": encoder.patch_embed.img_size[0], "patch_size": encoder.patch_embed.patch_size[0],
                    "num_layers": len(encoder.blocks), "num_heads": encoder.blocks[0].attn.num_heads,
                    "hidden_dim": encoder.embed_dim, "mlp_dim": encoder.blocks[0].mlp.fc1.out_features}
            return LibraryModel(library, TORCHVISION_VIT, args, _torchvision_vit_keys(state))
        args = {"num_classes": 0, "in_chans": encoder.patch_embed.proj.in_channels,
                "img_size": encoder.patch_embed.img_size[0], "patch_size": encoder.patch_embed.patch_size[0],
                "depth": len(encoder.blocks), "dynamic_img_size": True}
        return LibraryModel(library, _VIT_ARCHITECTURES[encoder.embed_dim], args, state)
    assert isinstance(encoder, TimmBackbone)
    state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return LibraryModel(library, encoder.model_name, dict(encoder.create_args), state)


def working_libraries(loaded: LoadedEncoder) -> list[str]:
    """The libraries ``loaded``'s encoder can be exported to."""
    return [library for library in LIBRARIES if _no_equivalent(loaded, library) is None]


def _no_equivalent(loaded: LoadedEncoder, library: str) -> Optional[str]:
    """Why ``loaded``'s encoder cannot be built in ``library``, or None when it can."""
    encoder = loaded.encoder
    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    # A method's encoder may be its backbone itself (DINO's teacher) or wrap it (CPC's patch grid,
    # colorization's RGB -> L): only the former is a library model.
    if loaded.method is not None and not isinstance(encoder, (ResNetBackbone, VisionTransformerBackbone, TimmBackbone)):
        return f"the {loaded.method['name']} encoder wraps its backbone ({type(encoder).__name__})"
    if isinstance(encoder, ResNetBackbone):
        if isinstance(encoder.conv1, nn.Conv2d) and encoder.conv1.kernel_size == (3, 3):
            return "its 3×3 small stem without max-pool exists in neither torchvision nor timm"
        if _resnet_architecture(encoder) is None:
            return "its stages match no ResNet-18/34/50"
        if library == "torchvision" and encoder.conv1.in_channels != 3:
            return f"torchvision's ResNet takes 3-channel images, this one {encoder.conv1.in_channels}"
        if encoder.width != 1.0:  # timm's ResNet scales its stages (channels=…) but not its 7×7 stem
            return f"width={encoder.width:g}: torchvision's and timm's standard stems are 64 channels wide"
        return None
    if isinstance(encoder, VisionTransformerBackbone):
        if library == "torchvision" and encoder.patch_embed.proj.in_channels != 3:
            return f"torchvision's ViT takes 3-channel images, this one {encoder.patch_embed.proj.in_channels}"
        if library == "timm" and encoder.embed_dim not in _VIT_ARCHITECTURES:
            return f"embed_dim {encoder.embed_dim} matches no timm ViT-Tiny/Small/Base"
        return None
    if isinstance(encoder, TimmBackbone):
        return "it is a timm model" if library == "torchvision" else None
    return f"{type(encoder).__name__} is no ResNet, ViT or timm model"


def _torchvision_vit_keys(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """timm ViT keys → torchvision ``VisionTransformer`` keys. Same computation: pre-norm blocks,
    LayerNorm eps 1e-6, fused qkv (torchvision's ``in_proj``), exact-GELU MLP, CLS token after the
    final norm; the round-trip test checks the features agree."""
    renamed: Dict[str, Tensor] = {}
    for key, value in state.items():
        new = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
               "patch_embed.proj.weight": "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias",
               "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias"}.get(key)
        if new is None:
            _, index, rest = key.split(".", 2)  # blocks.<i>.<rest>
            layer = f"encoder.layers.encoder_layer_{index}."
            new = layer + {"norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
                           "attn.qkv.weight": "self_attention.in_proj_weight",
                           "attn.qkv.bias": "self_attention.in_proj_bias",
                           "attn.proj.weight": "self_attention.out_proj.weight",
                           "attn.proj.bias": "self_attention.out_proj.bias",
                           "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
                           "mlp.fc1.weight": "mlp.0.weight", "mlp.fc1.bias": "mlp.0.bias",
                           "mlp.fc2.weight": "mlp.3.weight", "mlp.fc2.bias": "mlp.3.bias"}[rest]
        renamed[new] = value
    return renamed


def _stages(net: ResNetBackbone) -> list[nn.Sequential]:
    return [net.layer1, net.layer2, net.layer3, net.layer4]


def _resnet_architecture(net: ResNetBackbone) -> Optional[str]:
    block = type(net.layer1[0]).__name__
    return _RESNET_LAYERS.get((block, tuple(len(stage) for stage in _stages(net))))
