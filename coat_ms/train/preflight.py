"""What a training run checks before it reads data or builds anything, once the device is known:
the model options, what the device can run, where the run writes (never into its inputs, never
over another run) and, on resume, the settings recorded in the checkpoint (typed and checked like a
config file: a record is a door too).
"""
import os

from ..config import KEYS, RESUME_KEYS, Source, check_values, typed
from ..errors import CoatError
from ..fileio import check_outputs
from ..model_options import check_model_args
from .run_folder import RUN_FILES, check_run_folder

# Optimizers whose MindSpore operator has no kernel on a device (checked on this CPU build: every other
# optimizer mindcv 0.3.0 offers compiles and steps on CPU).
UNSUPPORTED_OPTIMIZERS = {"CPU": {"lamb": "MindSpore's Lamb operator has no CPU kernel"}}


def check_device_support(cfg, device):
    """Refuse, by name, a setting the device cannot run (instead of a graph-compile error later)."""
    reason = UNSUPPORTED_OPTIMIZERS.get(device, {}).get(cfg["opt"])
    if reason:
        raise CoatError(f"{cfg.named('opt')}: {cfg['opt']} cannot run on {device} ({reason}); choose another "
                        f"optimizer (adamw, lion, adam, momentum, sgd, ...) or a device that has it")


def check_model_request(cfg):
    """The model name and model_args, checked against the constructor before anything is built."""
    return check_model_args(cfg["model"], cfg["model_args"] or {}, where=cfg.named("model_args"))


def resumed_settings(cfg, meta, path):
    """The settings of a resumed run: those not given take the checkpoint's (typed and checked as if
    they came from a file); the run continues in the checkpoint's folder unless a flag names another.
    Returns them and the recorded values of the keys a resume must keep (config.RESUME_KEYS)."""
    saved = (meta.get("training") or {}).get("settings") or {}
    cfg = type(cfg)(cfg, cfg.sources)
    record = Source.record(path)
    for key, value in saved.items():
        if key in KEYS and key not in ("ckpt_path", "pretrained", "resume_opt", "output_dir", "resume") and \
                cfg.source(key).kind == Source.DEFAULT:
            cfg.set(key, typed(key, value, record), record)
    cfg["ckpt_path"], cfg["pretrained"] = "", False  # the weights come from the resumed checkpoint
    if not cfg.chosen_for_this_run("ckpt_save_dir"):
        cfg["ckpt_save_dir"] = os.path.dirname(os.path.abspath(path))  # the run continues where it is
    check_values(cfg)
    return cfg, {k: saved[k] for k in RESUME_KEYS if k in saved}


def check_run_outputs(cfg, out_dir, resume_path=None):
    """The run folder may take this run (check_run_folder) and no file it writes is an input: not the
    config file or the start checkpoint, not inside the data splits it reads.  Creates nothing;
    returns the coat_ms.fileio.OutputWatch for the data listing."""
    flag = cfg.named("ckpt_save_dir")
    continuing = resume_path and os.path.dirname(os.path.abspath(resume_path)) == os.path.abspath(out_dir)
    written = [n for n in RUN_FILES if not (continuing and n == "config.yaml")]  # a resumed run keeps its own
    outputs = [(f"{flag}'s {name}", os.path.join(out_dir, name)) for name in written]
    files = [("config", path) for path in cfg.config_files()] + [("checkpoint", cfg["ckpt_path"])]
    if resume_path and not continuing:  # in its own folder it is the run's own state, continued
        files.append(("resume checkpoint", resume_path))
    splits = [("train split", cfg["train_split"])] + ([("val split", cfg["val_split"])] if cfg["val_while_train"]
                                                      else [])
    folders = [(what, os.path.join(cfg["data_dir"], split)) for what, split in splits if cfg["data_dir"]]
    watch = check_outputs(outputs, files, folders, output_folders=[(flag, out_dir)])
    check_run_folder(out_dir, resume_path)
    return watch
