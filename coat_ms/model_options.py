"""Model options (``model_args``, create_model's ``**overrides``, a checkpoint record's options) checked
before a model is built.

A wrong option used to surface as an IndexError, TypeError or ValueError from deep inside the
constructor.  ``check_model_args`` checks the options against the CoaT constructor's own signature
(unknown names, with suggestions) and then what the constructor needs of each value together with
the variant's defaults: four values per stage, integers where widths and depths go, head counts that
divide every width, a crpe window whose heads add up to num_heads, equal widths where parallel blocks
mix stages.  Every problem is one CoatError line naming where the options came from.
"""
import difflib
import inspect
import numbers

from .errors import CoatError

# create_model's own arguments: given there (train.py: --num_classes, --in_channels, --drop_rate,
# --drop_path_rate), never inside the options.
OWN_ARGUMENTS = {"num_classes": "num_classes", "in_chans": "in_channels", "drop_rate": "drop_rate",
                 "drop_path_rate": "drop_path_rate"}
STAGES = 4


class ModelOptionsError(CoatError):
    """Model options the CoaT constructor cannot build."""


def _integer(value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or float(value) != int(value):
        raise ValueError(f"an integer >= {minimum}")
    if int(value) < minimum:
        raise ValueError(f"an integer >= {minimum}")
    return int(value)


def _positive_number(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < float("inf"):
        raise ValueError("a number > 0")
    return value


def _rate(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError("a rate in [0, 1)")
    return float(value)


def _flag(value):
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _per_stage(item, what):
    def check(value):
        if not isinstance(value, (list, tuple)) or len(value) != STAGES:
            raise ValueError(f"a list of {STAGES} values ({what}), one per stage")
        out = []
        for v in value:
            try:
                out.append(item(v))
            except ValueError as exc:
                raise ValueError(f"a list of {STAGES} values, each {exc}") from None
        return tuple(out)
    return check


def _odd_kernel(key):
    if isinstance(key, str) and key.strip().isdigit():  # JSON (and so a checkpoint record) writes keys as text
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key < 1 or key % 2 == 0:
        raise ValueError("kernel sizes that are odd integers")
    return key


def _crpe_window(value):
    if value is None:
        return None
    if isinstance(value, dict) and value:
        try:
            return {_odd_kernel(k): _integer(v, 1) for k, v in value.items()}
        except ValueError:
            pass
    elif not isinstance(value, bool) and isinstance(value, numbers.Integral):
        return _odd_kernel(value)
    raise ValueError("an odd kernel size for every head, or a mapping odd kernel size: number of heads")


def _backend(value):
    return value  # coat_ms.models.backend.resolve_backend checks it, with its own clear errors


CHECKS = {
    "patch_size": lambda v: _integer(v, 1),
    "embed_dims": _per_stage(lambda v: _integer(v, 1), "widths"),
    "serial_depths": _per_stage(lambda v: _integer(v, 0), "serial blocks"),
    "parallel_depth": lambda v: _integer(v, 0),
    "num_heads": lambda v: _integer(v, 1),
    "mlp_ratios": _per_stage(_positive_number, "MLP width / stage width"),
    "qkv_bias": _flag,
    "proj_drop_rate": _rate,
    "attn_drop_rate": _rate,
    "crpe_window": _crpe_window,
    "align_corners": _flag,
    "cpe_residual": _flag,
    "backend": _backend,
}


def constructor_options():
    """The CoaT constructor's parameter names and defaults (its own signature)."""
    from .models.coat import CoaT
    params = list(inspect.signature(CoaT.__init__).parameters.values())[1:]
    return {p.name: p.default for p in params}


def parse_model_args(text, model_name, where="--model_args"):
    """A ``--model_args`` flag (JSON text) of predict or export: read as the config key ``model_args`` is
    read by train.py and validate.py (coat_ms.config), then checked for ``model_name``; None when not given."""
    from .config import typed

    if text is None:
        return None
    return check_model_args(model_name, typed("model_args", text, where) or {}, where)


def check_model_args(model_name, options, where="model_args"):
    """``options`` checked for building ``model_name`` (see module doc); returns them normalised (tuples,
    crpe_window keys as ints).  ``where`` names their source in the error (a flag, a file, a record).
    With ``model_name`` None (not known yet) each value is checked on its own; the variant's widths and
    heads are checked together once the name is known."""
    from .models.coat import DEFAULT_CRPE_WINDOW, VARIANTS
    from .registry import model_entrypoint

    if model_name is not None:
        model_entrypoint(model_name)  # an unknown model is its own error
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ModelOptionsError(f"{where}: {options!r} is not a mapping of option: value")
    known = constructor_options()
    out = {}
    for key, value in options.items():
        if key in OWN_ARGUMENTS:
            raise ModelOptionsError(f"{where}: {key} is not a model option here: give it as {OWN_ARGUMENTS[key]} "
                                    f"(train.py / validate.py: --{OWN_ARGUMENTS[key]})")
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ModelOptionsError(f"{where}: unknown model option '{key}'{hint}; valid options: "
                                    f"{', '.join(k for k in known if k not in OWN_ARGUMENTS)}")
        try:
            out[key] = CHECKS[key](value)
        except ValueError as exc:
            raise ModelOptionsError(f"{where}: {key} {value!r} is not valid (expected {exc})") from None

    if model_name is None:
        return out
    arch = {**known, **VARIANTS[model_name], **out}
    heads, dims = arch["num_heads"], list(arch["embed_dims"])
    bad = [d for d in dims if d % heads]
    if bad:
        raise ModelOptionsError(f"{where}: num_heads {heads} does not divide embed_dims {dims} (each stage splits its "
                                f"width into heads; {bad[0]} is not a multiple of {heads})")
    window = arch["crpe_window"] or DEFAULT_CRPE_WINDOW
    window_heads = heads if isinstance(window, int) else sum(window.values())
    if window_heads != heads:
        shown = "the default " + str(DEFAULT_CRPE_WINDOW) if arch["crpe_window"] is None else repr(window)
        raise ModelOptionsError(f"{where}: crpe_window {shown} spreads {window_heads} heads over its kernels but "
                                f"num_heads is {heads}: give crpe_window as kernel: heads adding up to {heads}, or "
                                f"one odd kernel size for all heads")
    ratios = list(arch["mlp_ratios"])
    thin = [(d, r) for d, r in zip(dims, ratios) if int(d * r) < 1]
    if thin:
        raise ModelOptionsError(f"{where}: mlp_ratios {ratios} gives an MLP without units at width {thin[0][0]}")
    if arch["parallel_depth"] > 0 and (len(set(dims[1:])) > 1 or len(set(ratios[1:])) > 1):
        raise ModelOptionsError(f"{where}: parallel blocks (parallel_depth {arch['parallel_depth']}) mix stages 2-4, "
                                f"which need equal embed_dims and mlp_ratios there, got {dims} and {ratios}")
    return out
