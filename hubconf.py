"""torch.hub entry points: ``torch.hub.load("path/to/hyvl", "meru_tiny", source="local")``.

One entry per registry name (``hyvl.list_models()``), randomly initialised unless ``pretrained``
names a checkpoint (export directory, training output directory, MERU / HyCoCLIP ``.pth`` or
``hf-hub:ORG/NAME``). ``with_transforms=True`` returns ``(model, preprocess, tokenizer)``.
"""

dependencies = ["torch", "torchvision", "timm", "open_clip", "safetensors", "yaml"]


def _entry(name: str):
    def entry(pretrained=None, device="cpu", with_transforms=False, **overrides):
        import hyvl

        model, _, preprocess = hyvl.create_model_and_transforms(
            name, pretrained=pretrained, device=device, **overrides
        )
        if with_transforms:
            return model, preprocess, hyvl.get_tokenizer(model.config)
        return model

    entry.__name__ = name
    entry.__doc__ = f"hyvl {name}: HyvlModel (random init unless pretrained= a checkpoint)."
    return entry


def _register():
    from hyvl.models.registry import list_models

    for _name in list_models():
        globals()[_name] = _entry(_name)


_register()
