"""Files of Hugging Face hub repositories: found in the local hub cache, else downloaded within a bounded time.

The local lookup reads the hub's own cache layout (what ``huggingface_hub`` writes), so files that
timm or the ``hf`` command already fetched are used as they are:

    <hub cache>/models--<owner>--<name>/refs/main              -> the revision, e.g. a commit hash
    <hub cache>/models--<owner>--<name>/snapshots/<revision>/<file>

The hub cache is ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read at call
time.  Downloads go through ``huggingface_hub`` (optional) into that same cache; they are attempted only
when ``HF_HUB_OFFLINE`` is unset and the hub answers a first request within ``COAT_MS_HUB_TIMEOUT``
seconds (default 3), so a machine without network gets its answer in seconds, never a hang.
"""
import os
import socket
import threading
import urllib.parse

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_cache_dir():
    """The Hugging Face hub cache folder, as huggingface_hub resolves it (environment read now)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def repo_folder(repo_id, cache_dir=None):
    return os.path.join(cache_dir or hub_cache_dir(), "models--" + repo_id.replace("/", "--"))


def cached_file(repo_id, filename, cache_dir=None):
    """Path of ``filename`` of the repo's main revision in the hub cache, or None.

    Without ``refs/main`` (a file placed by hand), the snapshot folder ``main`` is used.
    """
    folder = repo_folder(repo_id, cache_dir)
    revision = "main"
    ref = os.path.join(folder, "refs", "main")
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as f:
            revision = f.read().strip() or "main"
    path = os.path.join(folder, "snapshots", revision, filename)
    return path if os.path.isfile(path) else None  # isfile follows the hub's symlink to its blob


def offline():
    """True when HF_HUB_OFFLINE forbids network access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def timeout_s():
    try:
        return max(0.1, float(os.environ.get("COAT_MS_HUB_TIMEOUT", DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def endpoint():
    return os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


class _Deadline(Exception):
    pass


def call_with_deadline(fn, seconds):
    """fn() in a daemon thread; raises _Deadline if it has not returned after ``seconds``.

    Needed because name resolution (getaddrinfo) takes no timeout of its own.
    """
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name="coat_ms-hub-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _Deadline()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _host_reachable(url, seconds):
    """A TCP connection to the endpoint (or the proxy, when one is set) opens within ``seconds``."""
    proxy = next((os.environ[v] for v in _PROXY_VARIABLES if os.environ.get(v)), None)
    target = urllib.parse.urlsplit(proxy or url)
    host = target.hostname
    port = target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return False
    try:
        call_with_deadline(lambda: socket.create_connection((host, port), timeout=seconds).close(), seconds)
        return True
    except (_Deadline, OSError):
        return False


def download(repo_id, filenames):
    """Download the first of ``filenames`` the repo has into the hub cache.

    Returns (path, None) on success, else (None, reason) with a short reason for the user.
    """
    if offline():
        return None, "HF_HUB_OFFLINE is set"
    try:
        import huggingface_hub
    except ImportError:
        return None, "huggingface_hub is not installed (pip install huggingface_hub)"
    url, seconds = endpoint(), timeout_s()
    host = urllib.parse.urlsplit(url).hostname or url
    if not _host_reachable(url, seconds):
        return None, f"{host} is not reachable (no answer within {seconds:g} s)"
    reasons = []
    for filename in filenames:
        file_url = huggingface_hub.hf_hub_url(repo_id, filename, endpoint=url)
        try:  # one request, no retries, bounded: does the hub answer, and does it have the file?
            call_with_deadline(lambda u=file_url: huggingface_hub.get_hf_file_metadata(u, timeout=seconds, endpoint=url),
                               seconds + 1)
        except _Deadline:
            return None, f"{host} did not answer within {seconds:g} s"
        except Exception as exc:  # not found, gated, HTTP, connection or timeout errors
            reasons.append(f"{filename}: {_first_line(exc)}")
            if _is_missing_file(exc):
                continue
            if _is_timeout(exc):
                return None, f"{host} did not answer within {seconds:g} s"
            return None, f"{host} answered with an error ({reasons[-1]})"
        try:
            path = huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=hub_cache_dir(), endpoint=url,
                                                   etag_timeout=seconds)
        except Exception as exc:
            return None, f"downloading {filename} from {host} failed ({_first_line(exc)})"
        return path, None
    return None, f"{repo_id} has none of {', '.join(filenames)} ({'; '.join(reasons)})"


def _is_timeout(exc):
    return isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__ or "timed out" in str(exc)


def _is_missing_file(exc):
    return type(exc).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError")


def _first_line(exc):
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
