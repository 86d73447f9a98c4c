"""pretrained=True: timm's ImageNet-1k weights for a CoaT variant, converted once, cached, loaded strictly.

Where the source comes from (the repository is the variant's ``hf_hub_id``: ``timm/<variant>.in1k``),
in order, both done by huggingface_hub:
  1. the Hugging Face hub cache: ``model.safetensors`` or ``pytorch_model.bin`` of the main revision,
     as timm, ``hf download`` or any huggingface_hub user left it;
  2. a download into that cache, unless ``HF_HUB_OFFLINE`` is set or the hub does not answer within
     ``HF_HUB_ETAG_TIMEOUT`` seconds (3 here).
The first use converts it with the library's conversion rules (coat_ms.conversion: strict names and
shapes, tied copies checked equal), checks coat_ms's logits against timm's on the same file (when torch
and timm are installed) and caches ``<variant>.in1k.ckpt`` with a sidecar ``.ckpt.json`` in
``$COAT_MS_HOME/pretrained`` (default ``~/.cache/coat_ms/pretrained``).  Later calls load the cache when
the sidecar, the checkpoint's sha256 and the source's sha256 all agree; otherwise the source is
converted again.  The sidecar also holds the weights' record (coat_ms.origin): timm's preprocessing for
the variant, in timm's style, which validate.py, predict, export and fine-tuning runs read.  Files the
tool did not write (a .ckpt without its sidecar) are never replaced.
"""
import json
import logging
import os
import threading
import urllib.parse

from .checkpoint import load_with_fresh_head, read_checkpoint
from .conversion import CONVERTER_VERSION
from .conversion.readers import sha256_of
from .errors import CheckpointError, first_line
from .origin import TIMM, record

logger = logging.getLogger("coat_ms")

SOURCE_FILES = ("model.safetensors", "pytorch_model.bin")   # timm's hub files, preferred first
HUB_TIMEOUT_S = 3.0   # the wait for the hub's first answer, unless HF_HUB_ETAG_TIMEOUT says otherwise
WRITTEN_BY = "coat_ms.pretrained"


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


def pretrained_cfg(variant):
    """The variant's default config (coat_ms.models.coat.default_cfgs: hub id, classes, input size), for a
    variant that has pretrained weights."""
    from .models.coat import default_cfgs
    if not default_cfgs.get(variant, {}).get("hf_hub_id"):
        with_weights = [name for name, cfg in default_cfgs.items() if cfg.get("hf_hub_id")]
        raise PretrainedError(f"no pretrained weights are known for '{variant}'; variants with weights: "
                              f"{', '.join(with_weights)}")
    return default_cfgs[variant]


def hub_id(variant):
    """The hub repository of the variant's weights (its default config's ``hf_hub_id``)."""
    return pretrained_cfg(variant)["hf_hub_id"]


def cache_paths(variant):
    """(.ckpt, sidecar) of ``variant`` in the cache."""
    ckpt = os.path.join(cache_home(), hub_id(variant).split("/", 1)[1] + ".ckpt")
    return ckpt, ckpt + ".json"


# ------------------------------------------------------------------------------------------------
# The Hugging Face hub: huggingface_hub finds and fetches the files; coat_ms bounds the wait
# ------------------------------------------------------------------------------------------------

def hub_settings():
    """(hub cache folder, offline, endpoint, timeout in s) from the environment, read now.

    huggingface_hub reads HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE and HF_ENDPOINT once, when it is imported;
    coat_ms reads the same variables at each call and passes them as arguments, so a program (or a test)
    that sets them after importing timm is obeyed.  Unset, they are huggingface_hub's own defaults.
    HF_HUB_ETAG_TIMEOUT, huggingface_hub's limit on the metadata request, is HUB_TIMEOUT_S here unless set.
    """
    from huggingface_hub import constants
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        cache = os.path.expanduser(env["HF_HUB_CACHE"])
    elif env.get("HF_HOME"):
        cache = os.path.join(os.path.expanduser(env["HF_HOME"]), "hub")
    else:
        cache = constants.HF_HUB_CACHE
    offline = env.get("HF_HUB_OFFLINE", "").strip().upper() in constants.ENV_VARS_TRUE_VALUES
    try:
        timeout = max(0.1, float(env.get("HF_HUB_ETAG_TIMEOUT") or HUB_TIMEOUT_S))
    except ValueError:
        timeout = HUB_TIMEOUT_S
    return cache, offline, (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"), timeout


def find_source(variant):
    """The variant's timm weights in the Hugging Face hub cache (main revision), or None."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_settings()[0]
    for filename in SOURCE_FILES:
        path = try_to_load_from_cache(hub_id(variant), filename, cache_dir=cache)
        if isinstance(path, str):  # not None, nor the hub's "known to be missing" marker
            return path
    return None


def _within(seconds, fn):
    """fn() in a daemon thread; TimeoutError if it has not returned after ``seconds`` (name resolution takes
    no timeout of its own, so a machine with a silent resolver would otherwise wait for minutes)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name="coat_ms-hub-request", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def download(repo_id, filenames):
    """Download the first of ``filenames`` the repository has into the hub cache, with huggingface_hub.

    Returns (path, None) on success, else (None, a short reason for the user).  One metadata request per
    file decides first, without retries and within the timeout: hf_hub_download retries a request that
    failed for lack of network with a 60 s timeout, which is not "an answer in seconds".
    """
    import httpx2  # huggingface_hub's HTTP client: its errors say "no network" apart from "the hub said no"
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    cache, offline, endpoint, timeout = hub_settings()
    if offline:
        return None, "HF_HUB_OFFLINE is set"
    host = urllib.parse.urlsplit(endpoint).hostname or endpoint
    missing = []
    for filename in filenames:
        url = hf_hub_url(repo_id, filename, endpoint=endpoint)
        try:
            _within(timeout + 1, lambda u=url: get_hf_file_metadata(u, timeout=timeout, endpoint=endpoint))
        except EntryNotFoundError as exc:
            missing.append(f"{filename}: {first_line(exc)[:200]}")
            continue
        except (TimeoutError, httpx2.TimeoutException):
            return None, f"{host} did not answer within {timeout:g} s"
        except (httpx2.NetworkError, ConnectionError) as exc:
            return None, f"{host} is not reachable ({first_line(exc)[:200]})"
        except Exception as exc:  # gated or missing repository, HTTP errors
            return None, f"{host} answered with an error ({filename}: {first_line(exc)[:200]})"
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache, endpoint=endpoint, etag_timeout=timeout), None
        except Exception as exc:
            return None, f"downloading {filename} from {host} failed ({first_line(exc)[:200]})"
    return None, f"{repo_id} has none of {', '.join(filenames)} ({'; '.join(missing)})"


def not_found_message(variant, reason):
    from huggingface_hub.file_download import repo_folder_name

    repo = hub_id(variant)
    place = os.path.join(hub_settings()[0], repo_folder_name(repo_id=repo, repo_type="model"), "snapshots", "main",
                         SOURCE_FILES[0])
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
    if meta is None:
        return "not converted yet"
    if not os.path.isfile(ckpt):
        return f"{os.path.basename(ckpt)} is missing"
    if meta.get("variant") != variant or meta.get("converter_version") != CONVERTER_VERSION:
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
    from .conversion.writers import json_text, save_ckpt
    from .fileio import atomic_write, atomic_write_text

    def write_ckpt(tmp):
        save_ckpt(params, tmp)
        meta["ckpt_sha256"] = sha256_of(tmp)
        atomic_write_text(sidecar, json_text(meta))

    atomic_write(ckpt, write_ckpt, suffix=".ckpt")  # MindSpore's writer needs the .ckpt suffix


def _convert(variant, source, ckpt, sidecar):
    """Convert the timm file, verify it against timm, cache it; returns ({name: array}, record)."""
    import importlib.util

    from .conversion import readers, verify
    from .conversion.core import torch_to_ms
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
    result = torch_to_ms(src.state_dict, variant)
    check = None
    if importlib.util.find_spec("timm") and importlib.util.find_spec("torch"):
        check = verify.verify_torch(result, src.state_dict, image_size=pretrained_cfg(variant)["input_size"][-1])
        if not check.ok:
            raise PretrainedError(f"pretrained {variant}: the converted weights do not reproduce timm's logits "
                                  f"({check.line()}); nothing cached")
        logger.info("pretrained %s: %s", variant, check.line())
    else:
        logger.warning("pretrained %s: converted with every name and shape checked, but not compared with timm "
                       "(torch and timm are not installed)", variant)
    meta = {"written_by": WRITTEN_BY, "converter_version": CONVERTER_VERSION, "variant": variant,
            "hub_repo": hub_id(variant), "source_file": os.path.abspath(source), "source_sha256": src.sha256,
            "source_format": src.format, "num_classes": result.report.num_classes,
            "verify_rel_error": check.rel if check else None,
            "record": record(variant, TIMM, result.report.num_classes)}
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
    return found if isinstance(found, dict) and found.get("model") == variant else record(variant, TIMM)


def pretrained_weights(variant):
    """({name: array or Parameter}, record) of the variant's ImageNet weights, from the cache or converted now."""
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
        source, reason = download(hub_id(variant), SOURCE_FILES)
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
    channels = pretrained_cfg(variant)["input_size"][0]
    if in_channels != channels:
        raise PretrainedError(f"pretrained {variant} weights take {channels} input channels, not "
                              f"in_channels={in_channels}: use pretrained=False, or feed {channels}-channel images")


def load_pretrained(model, variant):
    """Load the variant's ImageNet weights into ``model`` strictly; a head of another size stays fresh
    (coat_ms.checkpoint.load_with_fresh_head).

    Returns (LoadReport, the weights' record).  Every other missing, unused or mis-shaped parameter is
    an error.
    """
    import mindspore as ms

    check_supported(variant, model.in_chans)
    weights, found = pretrained_weights(variant)
    params = {name: value if isinstance(value, ms.Parameter) else ms.Parameter(ms.Tensor(value), name=name)
              for name, value in weights.items()}
    report = load_with_fresh_head(model, params, source=f"pretrained {variant}")
    return report, dict(found, num_classes=model.num_classes)
