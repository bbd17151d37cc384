"""SAEs in SAELens's file layout, both ways, so that a dictionary trained here can be read by SAELens
(``sae_lens.SAE.load_from_disk(DIR)``) and one trained elsewhere can be analysed here.

A SAELens SAE directory holds::

    cfg.json                 {"architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
                              "normalize_activations", "reshape_activations", "metadata": {...},
                              "k" and "rescale_acts_by_decoder_norm" for "topk"}
    sae_weights.safetensors  W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in],
                             threshold [d_sae] for "jumprelu"

and computes ``pre = (x − b_dec·[apply_b_dec_to_input]) W_enc + b_enc``, ``f = σ(pre)``, ``x̂ = f W_dec + b_dec``
with σ: ``standard`` ReLU, ``topk`` ReLU of the ``k`` largest, ``jumprelu`` ``ReLU(pre)·1[pre > threshold]``.
That is our SAE with ``s = 1`` (the input scale folded in) and ``W_enc[0]``, ``W_dec[:, 0]``, ``b_dec[0]``:
``l1`` is ``standard``, ``topk`` is ``topk``, and ``jumprelu``, ``batchtopk`` and ``matryoshka`` are ``jumprelu``
(inference with a threshold; SAELens saves its own BatchTopK SAEs that way, ``θ`` repeated per feature).

A crosscoder exports the SAE of its identity block (the encoder it reads and the decoder of block 0), which
SAELens can run on untransformed activations, plus the whole crosscoder in our format under
``groupcc_dictionary/`` (:func:`groupcc.training.dictionary_files.load_dictionary` reads it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from groupcc.crosscoders import Dictionary, DictionaryConfig, DictionaryError
from groupcc.groups import get_group

from .dictionary_files import load_dictionary, read_dictionary_record, save_dictionary, write_dictionary_files
from .runs import RunError, StagedDirectory, check_replaceable, read_json, read_safetensors, write_json, write_safetensors

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: Where a crosscoder's export keeps the whole crosscoder, in our format.
FULL_DICTIONARY = "groupcc_dictionary"
#: SAELens's loader reads ``metadata.sae_lens_version`` to tell its 6.x layout (this one) from older ones, whose
#: field names it rewrites; the files follow the layout of that version.
LAYOUT_VERSION = "6.0.0"
#: Our sparsity -> SAELens architecture.
ARCHITECTURES = {"l1": "standard", "topk": "topk", "batchtopk": "jumprelu", "matryoshka": "jumprelu", "jumprelu": "jumprelu"}
#: SAELens architecture -> our sparsity on import.
SPARSITIES = {"standard": "l1", "topk": "topk", "jumprelu": "jumprelu"}
DTYPES = {"float32": torch.float32, "torch.float32": torch.float32, "float16": torch.float16, "torch.float16": torch.float16,
          "bfloat16": torch.bfloat16, "torch.bfloat16": torch.bfloat16, "float64": torch.float64, "torch.float64": torch.float64}


# ---------------------------------------------------------------------- export
def export_saelens(run: str | Path | Dictionary, out: str | Path, *, metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``run`` (a dictionary directory, e.g. a training run, or a :class:`Dictionary`) into the new directory
    ``out`` in SAELens's layout (see the module docstring), atomically. ``metadata`` (JSON-able) is added to
    ``cfg.json``'s ``metadata`` (a run's layer, source and store are recorded from its ``config.json``)."""
    check_replaceable(out, overwrite, WEIGHTS_FILE, "SAELens export")  # never a dictionary run or another folder
    record = read_dictionary_record(run) if not isinstance(run, Dictionary) else {}
    dictionary = load_dictionary(run) if not isinstance(run, Dictionary) else run
    config = dictionary.config
    if config.read_blocks != 1:
        raise DictionaryError(f"this crosscoder's encoder reads all {config.n_blocks} blocks (encoder_reads = 'all'): "
                              "expected one that reads the identity block, which an SAE can run")
    folded = dictionary.fold_input_scale().cpu()
    cfg = saelens_config(folded, {**_run_metadata(record), **(metadata or {})})
    with StagedDirectory(Path(out), overwrite=overwrite, what="SAELens export") as tmp:
        write_safetensors(tmp / WEIGHTS_FILE, saelens_weights(folded))
        write_json(tmp / CFG_FILE, cfg)
        if config.kind == "crosscoder":
            (tmp / FULL_DICTIONARY).mkdir()
            write_dictionary_files(folded, tmp / FULL_DICTIONARY, {key: value for key, value in record.items()
                                                                   if key not in ("format", "version", "dictionary")})
    return Path(out)


def saelens_weights(dictionary: Dictionary) -> dict[str, torch.Tensor]:
    """The tensors of ``sae_weights.safetensors`` for a dictionary with ``s = 1``: the identity block's encoder,
    decoder and decoder bias, the encoder bias and, for a threshold architecture, ``threshold [d_sae]``."""
    if dictionary.input_scale.item() != 1.0:
        raise DictionaryError(f"input scale {dictionary.input_scale.item()}: expected a dictionary with the scale folded in (1)")
    tensors = {"W_enc": dictionary.W_enc[0], "W_dec": dictionary.W_dec[:, 0], "b_enc": dictionary.b_enc, "b_dec": dictionary.b_dec[0]}
    if ARCHITECTURES[dictionary.config.sparsity] == "jumprelu":
        tensors["threshold"] = dictionary.threshold.expand(dictionary.config.n_features)
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in tensors.items()}


def saelens_config(dictionary: Dictionary, metadata: dict | None = None) -> dict:
    """The content of ``cfg.json``: SAELens's ``SAEConfig`` fields (and ``k`` for TopK), our own record under
    ``metadata.groupcc``."""
    config = dictionary.config
    architecture = ARCHITECTURES[config.sparsity]
    cfg = {
        "architecture": architecture, "d_in": config.d, "d_sae": config.n_features, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"sae_lens_version": LAYOUT_VERSION, "sae_lens_training_version": None, **(metadata or {}),
                     "groupcc": {"dictionary": config.to_dict()}},
    }
    if architecture == "topk":
        cfg.update(k=config.k, rescale_acts_by_decoder_norm=False)  # our TopK ranks the raw pre-activations
    return cfg


def _run_metadata(record: dict) -> dict:
    """SAELens metadata fields from a training run's record: the layer (``hook_name``), the model run
    (``model_name``) and the activation store (``dataset_path``), when the store's path is recorded."""
    data = record.get("data", {})
    found = {"hook_name": data.get("layer"), "model_name": data.get("source"), "dataset_path": record.get("acts")}
    return {key: value for key, value in found.items() if value is not None}


# ---------------------------------------------------------------------- import
def import_saelens(path: str | Path, group: str | None = None) -> Dictionary:
    """The SAE in SAELens's layout at ``path`` as a :class:`Dictionary` (eval mode, ``s = 1``): ``standard`` as
    ``l1``, ``topk`` as ``topk`` (decoder norms folded into the encoder when it was trained with
    ``rescale_acts_by_decoder_norm``), ``jumprelu`` as ``jumprelu``. ``apply_b_dec_to_input = false`` is folded
    into ``b_enc`` (``b_enc + b_dec W_enc``). ``group`` (a group name such as ``S4``) is recorded for the analysis."""
    if group is not None:
        group = get_group(group).name  # a name the analysis can build, checked before any file is read
    path = Path(path)
    cfg = _read_cfg(path)
    architecture, sparsity, k = _architecture(cfg, path)
    for key, allowed in (("normalize_activations", ("none", False, None)), ("reshape_activations", ("none", None))):
        if cfg.get(key) not in allowed:
            raise DictionaryError(f"{str(path / CFG_FILE)!r}: {key} = {cfg.get(key)!r}: expected 'none' (fold the "
                                  "normalisation into the weights before importing)")
    tensors = _read_weights(path, cfg, architecture)
    W_enc, W_dec, b_enc, b_dec = (tensors[name] for name in ("W_enc", "W_dec", "b_enc", "b_dec"))
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ W_enc  # pre = x W_enc + b_enc = (x − b_dec) W_enc + (b_enc + b_dec W_enc)
    if architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        # SAELens ranks pre_i·‖W_dec[i]‖ and decodes f_i·W_dec[i]/‖W_dec[i]‖: fold the norms into the encoder
        norms = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    d_in, d_sae = W_enc.shape
    config = DictionaryConfig(kind="sae", d=d_in, n_features=d_sae, sparsity=sparsity, group=group, **({"k": k} if k else {}))
    dictionary = Dictionary(config)
    with torch.no_grad():
        dictionary.W_enc.copy_(W_enc[None])
        dictionary.W_dec.copy_(W_dec[:, None])
        dictionary.b_enc.copy_(b_enc)
        dictionary.b_dec.copy_(b_dec[None])
        if sparsity == "jumprelu":
            dictionary.threshold.copy_(tensors["threshold"])
    return dictionary.eval()


def import_saelens_run(path: str | Path, out: str | Path, *, group: str | None = None, overwrite: bool = False) -> Path:
    """Import the SAELens SAE at ``path`` (:func:`import_saelens`) and save it as a dictionary directory ``out``,
    recording where it came from and its ``cfg.json``."""
    dictionary = import_saelens(path, group)
    record = {"imported_from": str(Path(path).resolve()), "saelens_cfg": _read_cfg(Path(path))}
    return save_dictionary(dictionary, out, record=record, overwrite=overwrite)


def _read_cfg(path: Path) -> dict:
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise DictionaryError(f"{str(path)!r} is not a SAELens SAE directory: expected {CFG_FILE} and {WEIGHTS_FILE} in it")
    try:
        cfg = read_json(path / CFG_FILE, what="SAELens SAE")
    except RunError as err:
        raise DictionaryError(str(err)) from None
    if not isinstance(cfg, dict):
        raise DictionaryError(f"{str(path / CFG_FILE)!r} is not a SAELens config: expected a JSON object")
    return cfg


def _architecture(cfg: dict, path: Path) -> tuple[str, str, int | None]:
    """``(SAELens architecture, our sparsity, k)``; SAELens before 6.0 wrote TopK SAEs as ``standard`` with
    ``activation_fn_str = "topk"`` and ``activation_fn_kwargs = {"k": ...}``."""
    architecture = cfg.get("architecture", "standard")
    if architecture == "standard" and cfg.get("activation_fn_str", cfg.get("activation_fn")) == "topk":
        architecture, k = "topk", cfg.get("activation_fn_kwargs", {}).get("k")
    else:
        k = cfg.get("k")
    if architecture not in SPARSITIES:
        raise DictionaryError(f"{str(path / CFG_FILE)!r}: architecture {architecture!r}: expected one of "
                              f"{', '.join(SPARSITIES)} (SAELens saves BatchTopK and Matryoshka SAEs as jumprelu)")
    if architecture == "topk" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise DictionaryError(f"{str(path / CFG_FILE)!r}: k = {k!r}: expected a positive integer for a topk SAE")
    return architecture, SPARSITIES[architecture], k if architecture == "topk" else None


def _read_weights(path: Path, cfg: dict, architecture: str) -> dict[str, torch.Tensor]:
    """The tensors, as float32, after checking their names and shapes against ``cfg``'s ``d_in`` and ``d_sae``."""
    try:
        tensors = read_safetensors(path / WEIGHTS_FILE, what="SAELens weights")
    except RunError as err:
        raise DictionaryError(str(err)) from None
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if architecture == "jumprelu":
        expected["threshold"] = (d_sae,)
    for name, shape in expected.items():
        if name not in tensors:
            raise DictionaryError(f"{str(path / WEIGHTS_FILE)!r} has no {name}: expected {', '.join(expected)}")
        if tuple(tensors[name].shape) != shape:
            raise DictionaryError(f"{str(path / WEIGHTS_FILE)!r}: {name} has shape {list(tensors[name].shape)}, "
                                  f"expected {list(shape)} from d_in = {d_in}, d_sae = {d_sae}")
    if cfg.get("dtype", "float32") not in DTYPES:
        raise DictionaryError(f"{str(path / CFG_FILE)!r}: dtype {cfg.get('dtype')!r}: expected one of float32, float16, bfloat16, float64")
    return {name: tensors[name].float() for name in expected}
