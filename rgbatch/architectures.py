"""The architecture registry: a weight file names its architecture, and this builds it.

    model = build_model("residual-gru", config)     # what weights, training and the codec call
    register_architecture(MyCodec)                  # a new architecture, known by MyCodec.architecture

An architecture is a torch module class with:

    architecture    its registry name (stored in weight files and training checkpoints)
    Config          a frozen dataclass with to_json() / from_json(), and the properties
                    bits, max_iterations, block (pixels per code position along a side) and
                    align (the multiple the network's input height and width must be)
    cfg             its Config
    forward(x, iterations, stop=None, with_codes=False)   training: reconstructions (T, N, 3, H, W)
    iterate(x, iterations, search_steps=0, search_loss=None)  encoding: yields (codes +-1, x_hat)
    encode(x, iterations, on_iteration=None)                  codes (T, N, bits, H/block, W/block)
    decode(codes)                                             reconstruction in [-0.5, 0.5]
    decode_from(codes, state=None)    decoding resumed from a state it returned (partial candidates)
    set_precision(dtype), net_dtype, gain(t)
    set_decoding(name), decoding     optional: "exact" / "float" decoding (rgbatch.exact); without
                                     them the codec decodes in float

`rgbatch.model.ResidualGRUCodec` is the reference. Weight files without an architecture
name are Residual-GRU files (every file written before the registry).
"""

from __future__ import annotations

from .model import ResidualGRUCodec

DEFAULT_ARCHITECTURE = ResidualGRUCodec.architecture
ARCHITECTURES: dict[str, type] = {}


def register_architecture(cls: type) -> type:
    """Make a model class known by its `architecture` name (usable as a class decorator)."""
    if ARCHITECTURES.get(cls.architecture, cls) is not cls:
        raise ValueError(f"architecture {cls.architecture!r} is taken by {ARCHITECTURES[cls.architecture].__name__}")
    ARCHITECTURES[cls.architecture] = cls
    return cls


def get_architecture(name: str | None) -> type:
    """The model class of an architecture name (None: the default, Residual-GRU)."""
    try:
        return ARCHITECTURES[name or DEFAULT_ARCHITECTURE]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} (this rgbatch knows {sorted(ARCHITECTURES)})") from None


def build_model(name: str | None, config):
    """A fresh model of an architecture (config: its Config, or a dict of the Config's fields)."""
    cls = get_architecture(name)
    return cls(config if isinstance(config, cls.Config) else cls.Config(**config))


register_architecture(ResidualGRUCodec)
