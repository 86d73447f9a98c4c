"""pretrained=True: timm's ImageNet-1k weights for a CoaT variant, converted once, cached, loaded strictly.

Where the source comes from, in order:
  1. the Hugging Face hub cache (``coat_ms.hub``): ``timm/<variant>.in1k``, ``model.safetensors`` or
     ``pytorch_model.bin``, as timm, ``hf download`` or huggingface_hub left it;
  2. a download through huggingface_hub, unless ``HF_HUB_OFFLINE`` is set or the hub does not answer
     within a few seconds.
The first use converts it with the project's converter (strict names and shapes, tied copies checked
equal), checks coat_ms's logits against timm's on the same file (when torch and timm are installed)
and caches ``<variant>.in1k.ckpt`` with a sidecar ``.ckpt.json`` in ``$COAT_MS_HOME/pretrained``
(default ``~/.cache/coat_ms/pretrained``).  Later calls load the cache when the sidecar, the checkpoint's sha256 and the
source's sha256 all agree; otherwise the source is converted again.  The sidecar also holds the
weights' record (coat_ms.origin): timm's preprocessing for the variant, in timm's style, which
validate.py, predict, export and fine-tuning runs read.  Files the tool did not write (a
.ckpt without its sidecar) are never replaced.
"""
import json
import logging
import os

from . import hub, origin
from .errors import CheckpointError

logger = logging.getLogger("coat_ms")

SOURCE_FILES = ("model.safetensors", "pytorch_model.bin")   # timm's hub files, preferred first
PRETRAINED_CLASSES = 1000
PRETRAINED_CHANNELS = 3
WRITTEN_BY = "coat_ms.pretrained"
VERIFY_IMAGE_SIZE = 224


class PretrainedError(CheckpointError):
    """Pretrained weights that cannot be found, converted or loaded as asked (one line)."""


def coat_ms_home():
    """$COAT_MS_HOME, else $XDG_CACHE_HOME/coat_ms, else ~/.cache/coat_ms (read at call time; the kernels'
    build cache uses the same base)."""
    if os.environ.get("COAT_MS_HOME"):
        return os.path.expanduser(os.environ["COAT_MS_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "coat_ms")


def cache_home():
    """The folder of the converted pretrained weights: <coat_ms home>/pretrained."""
    return os.path.join(coat_ms_home(), "pretrained")


def hub_id(variant):
    """The hub repository of the variant's weights, from its default config (``hf_hub_id``)."""
    from .models.coat import default_cfgs
    repo = default_cfgs.get(variant, {}).get("hf_hub_id")
    if not repo:
        with_weights = [name for name, cfg in default_cfgs.items() if cfg.get("hf_hub_id")]
        raise PretrainedError(f"no pretrained weights are known for '{variant}'; variants with weights: "
                              f"{', '.join(with_weights)}")
    return repo


def cache_paths(variant):
    """(.ckpt, sidecar) of ``variant`` in the cache."""
    ckpt = os.path.join(cache_home(), hub_id(variant).split("/", 1)[1] + ".ckpt")
    return ckpt, ckpt + ".json"


def find_source(variant):
    """The variant's timm weights in the Hugging Face hub cache, or None."""
    for filename in SOURCE_FILES:
        path = hub.cached_file(hub_id(variant), filename)
        if path:
            return path
    return None


def not_found_message(variant, reason):
    repo = hub_id(variant)
    place = os.path.join(hub.repo_folder(repo), "snapshots", "main", SOURCE_FILES[0])
    return (f"no pretrained weights for {variant}: not in the Hugging Face cache and not downloaded ({reason}); "
            f"place {SOURCE_FILES[0]} (or {SOURCE_FILES[1]}) of https://huggingface.co/{repo} as {place} "
            f"(e.g. 'hf download {repo}' on a machine with network, then copy the cache), or convert a CoaT "
            f"checkpoint yourself: 'python -m convert --src X.pth --out X.ckpt --verify' and pass checkpoint_path='X.ckpt'")


# ------------------------------------------------------------------------------------------------
# The cache: a .ckpt and its sidecar, written by this module only
# ------------------------------------------------------------------------------------------------

def _read_sidecar(ckpt, sidecar):
    """The sidecar's metadata, None when neither file exists; an error for files this tool did not write."""
    if not os.path.exists(sidecar):
        if os.path.exists(ckpt):
            raise PretrainedError(f"{ckpt} exists but was not written by coat_ms (no {os.path.basename(sidecar)}); "
                                  f"move it away or set COAT_MS_HOME to another folder")
        return None
    try:
        with open(sidecar, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("written_by") != WRITTEN_BY:
        raise PretrainedError(f"{sidecar} was not written by coat_ms; move it (and {os.path.basename(ckpt)}) away "
                              f"or set COAT_MS_HOME to another folder")
    return meta


def _stale_reason(meta, ckpt, variant, source_sha):
    """Why the cached file cannot be used (None: it may be, if its own hash matches: see _load_if_intact)."""
    from convert import __version__ as converter_version
    if meta is None:
        return "not converted yet"
    if not os.path.isfile(ckpt):
        return f"{os.path.basename(ckpt)} is missing"
    if meta.get("variant") != variant or meta.get("converter_version") != converter_version:
        return "it was written for another variant or converter version"
    if source_sha is not None and meta.get("source_sha256") != source_sha:
        return "the source file changed since it was converted"
    return None


def _identity(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def _load_if_intact(ckpt, meta):
    """The cached parameters if the .ckpt has the sha256 its sidecar records, else None.

    The file is hashed, then read; if another process replaced it in between (a new inode), the new
    pair is checked and read instead, so what is returned is always a file that matched its hash.
    """
    from convert.readers import sha256_of
    from .checkpoint import read_checkpoint
    for _ in range(3):
        before = _identity(ckpt)
        if sha256_of(ckpt) != meta.get("ckpt_sha256"):
            return None
        params = read_checkpoint(ckpt)
        if _identity(ckpt) == before:
            return params
        meta = _read_sidecar(ckpt, ckpt + ".json")
        if meta is None:
            return None
    raise PretrainedError(f"{ckpt} keeps changing while it is read (another process converting?); try again")


def _write_cache(params, ckpt, sidecar, meta):
    """Sidecar first, checkpoint last, each replaced atomically.

    A reader between the two renames sees a sidecar whose ckpt_sha256 does not match the old .ckpt and
    converts again; it never loads a mismatched pair.
    """
    from convert.readers import sha256_of
    from convert.writers import json_text, save_ckpt
    from .fileio import atomic_write, atomic_write_text

    def write_ckpt(tmp):
        save_ckpt(params, tmp)
        meta["ckpt_sha256"] = sha256_of(tmp)
        atomic_write_text(sidecar, json_text(meta))

    atomic_write(ckpt, write_ckpt, suffix=".ckpt")  # MindSpore's writer needs the .ckpt suffix


def _convert(variant, source, ckpt, sidecar):
    """Convert the timm file, verify it against timm, cache it; returns ({name: array}, record)."""
    import importlib.util

    import convert
    from convert import readers, verify

    from .fileio import WriteError
    logger.info("pretrained %s: converting %s (first use)", variant, source)
    try:
        src = readers.read_source(source)
    except readers.PickledObjectsError:
        # torch.load would have to run the file's code: never done implicitly; the user decides, by a command
        raise PretrainedError(
            f"pretrained {variant}: {source} holds Python objects besides tensors, which coat_ms does not unpickle "
            f"by itself; if you trust the file, convert it: python -m convert --src {source} --out {variant}.ckpt "
            f"--trust-pickle, then start from it with --ckpt_path {variant}.ckpt (Python: "
            f"create_model('{variant}', checkpoint_path='{variant}.ckpt'))") from None
    result = convert.torch_to_ms(src.state_dict, variant)
    check = None
    if importlib.util.find_spec("timm") and importlib.util.find_spec("torch"):
        check = verify.verify_torch(result, src.state_dict, image_size=VERIFY_IMAGE_SIZE)
        if not check.ok:
            raise PretrainedError(f"pretrained {variant}: the converted weights do not reproduce timm's logits "
                                  f"({check.line()}); nothing cached")
        logger.info("pretrained %s: %s", variant, check.line())
    else:
        logger.warning("pretrained %s: converted with every name and shape checked, but not compared with timm "
                       "(torch and timm are not installed)", variant)
    meta = {"written_by": WRITTEN_BY, "converter_version": convert.__version__, "variant": variant,
            "hub_repo": hub_id(variant), "source_file": os.path.abspath(source), "source_sha256": src.sha256,
            "source_format": src.format, "num_classes": result.report.num_classes,
            "verify_rel_error": check.rel if check else None,
            "record": origin.record(variant, origin.TIMM, result.report.num_classes)}
    try:
        os.makedirs(os.path.dirname(ckpt), exist_ok=True)
        _write_cache(result.params, ckpt, sidecar, meta)
        logger.info("pretrained %s: cached %s", variant, ckpt)
    except (OSError, WriteError) as exc:  # a read-only home still gets the weights, converted again next time
        logger.warning("pretrained %s: not cached (%s); using the converted weights from memory", variant,
                       getattr(exc, "strerror", None) or exc)
    return result.params, meta["record"]


def _cached_record(meta, variant):
    """The record a cache sidecar holds (caches written before records existed: timm's, rebuilt)."""
    found = meta.get("record")
    return found if isinstance(found, dict) and found.get("model") == variant else origin.record(variant, origin.TIMM)


def pretrained_weights(variant):
    """({name: array or Parameter}, record) of the variant's ImageNet weights, from the cache or converted now."""
    from convert.readers import sha256_of
    ckpt, sidecar = cache_paths(variant)
    if os.path.exists(cache_home()) and not os.path.isdir(cache_home()):
        raise PretrainedError(f"{cache_home()} (the pretrained cache under COAT_MS_HOME) is not a folder")
    source = find_source(variant)
    if source is None:  # a cache whose own hash holds is used without network
        meta = _read_sidecar(ckpt, sidecar)
        params = None if _stale_reason(meta, ckpt, variant, None) else _load_if_intact(ckpt, meta)
        if params is not None:
            logger.info("pretrained %s: %s (its timm source is not in the Hugging Face cache, so not re-checked "
                        "against it)", variant, ckpt)
            return params, _cached_record(meta, variant)
        source, reason = hub.download(hub_id(variant), SOURCE_FILES)
        if source is None:
            raise PretrainedError(not_found_message(variant, reason))
    meta = _read_sidecar(ckpt, sidecar)
    reason = _stale_reason(meta, ckpt, variant, sha256_of(source))
    if reason is None:
        params = _load_if_intact(ckpt, meta)
        if params is not None:
            logger.info("pretrained %s: %s (cached conversion of %s)", variant, ckpt, source)
            return params, _cached_record(meta, variant)
        reason = f"{os.path.basename(ckpt)} does not match the sha256 in its sidecar"
    if meta is not None:
        logger.info("pretrained %s: converting again: %s", variant, reason)
    return _convert(variant, source, ckpt, sidecar)


# ------------------------------------------------------------------------------------------------
# Loading into a model
# ------------------------------------------------------------------------------------------------

def check_supported(variant, in_channels):
    """Fail before building anything when pretrained weights cannot serve this configuration."""
    hub_id(variant)
    if in_channels != PRETRAINED_CHANNELS:
        raise PretrainedError(f"pretrained {variant} weights take {PRETRAINED_CHANNELS} input channels, not "
                              f"in_channels={in_channels}: use pretrained=False, or feed 3-channel images")


def load_pretrained(model, variant):
    """Load the variant's ImageNet weights into ``model`` strictly; a head of another size stays fresh
    (coat_ms.checkpoint.load_with_fresh_head).

    Returns (LoadReport, the weights' record).  Every other missing, unused or mis-shaped parameter is
    an error.
    """
    import mindspore as ms

    from .checkpoint import load_with_fresh_head
    check_supported(variant, getattr(model, "in_chans", PRETRAINED_CHANNELS))
    weights, found = pretrained_weights(variant)
    params = {name: value if isinstance(value, ms.Parameter) else ms.Parameter(ms.Tensor(value), name=name)
              for name, value in weights.items()}
    report = load_with_fresh_head(model, params, source=f"pretrained {variant}")
    return report, dict(found, num_classes=getattr(model, "num_classes", PRETRAINED_CLASSES))
