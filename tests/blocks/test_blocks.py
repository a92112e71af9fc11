"""Behaviour of the individual CRMnet blocks and of the assembled canonical graphs."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras
import numpy as np
import pytest

from crmlab.blocks.assemble import assemble, parameter_counts, reverse_complement_average
from crmlab.blocks.conv import SEBlock, SEConvEncoder, SEConvStack, TransposeConvDecoder
from crmlab.blocks.heads import MLPHead
from crmlab.blocks.sequence import OneHotInput, PositionEncoding, ReverseComplement
from crmlab.blocks.transformer import TransformerEncoder
from crmlab.registry import load_graph, parse_graph
from crmlab.registry.templates import crmnet_unet
from tests.conftest import read_rows

GRAPHS = Path(__file__).resolve().parents[2] / "studies" / "graphs"
LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
TINY_CRMNET = Path(__file__).resolve().parents[1] / "fixtures" / "studies" / "tiny_graph.yaml"


def test_onehot_order_is_n_a_c_g_t_and_unknown_is_n() -> None:
    tokens = np.array([[0, 1, 2, 3, 4, 7, -1]], dtype="int32")
    y = keras.ops.convert_to_numpy(OneHotInput()(tokens))
    assert y.shape == (1, 7, 5)
    np.testing.assert_array_equal(y[0].argmax(-1), [0, 1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(y.sum(-1), np.ones((1, 7)))


def test_onehot_of_real_sequence_matches_its_letters(real_sequences: list[str], real_tokens: np.ndarray) -> None:
    y = keras.ops.convert_to_numpy(OneHotInput()(real_tokens))
    seq = real_sequences[0]
    letters = "".join("NACGT"[i] for i in y[0].argmax(-1))
    assert letters[: len(seq)] == seq and set(letters[len(seq) :]) <= {"N"}


def test_reverse_complement_of_one_hot_matches_the_reverse_complement_of_the_letters(
    real_sequences: list[str],
) -> None:
    from crmlab.runners.data import encode

    complement = str.maketrans("ACGTN", "TGCAN")
    flipped = [s.translate(complement)[::-1] for s in real_sequences]
    onehot = OneHotInput()
    out = ReverseComplement()(onehot(encode(real_sequences)))
    # padding N moves to the 5' end: the reverse complement of the padded 112-nt row
    expected = onehot(encode(["N" * (112 - len(s)) + s for s in flipped]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(expected))
    twice = ReverseComplement()(out)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(twice), keras.ops.convert_to_numpy(onehot(encode(real_sequences)))
    )


def test_reverse_complement_rejects_other_than_five_channels() -> None:
    with pytest.raises(ValueError, match=r"\(batch, length, 5\)"):
        ReverseComplement()(np.zeros((2, 10, 4), "float32"))


def test_reverse_complement_average_is_the_strand_mean_and_strand_symmetric(
    real_tokens: np.ndarray, tmp_path: Path
) -> None:
    from crmlab.runners.inference._explain import onehot_model
    from crmlab.runners.training._batches import reverse_complement

    model = assemble(load_graph(TINY_CRMNET))  # CRMnet's graph (U-Net, transformer, SE) at toy width
    both = reverse_complement_average(model)
    assert parameter_counts(both) == parameter_counts(model), "the two strands share every weight"
    x, rc = real_tokens.astype("int32"), reverse_complement(real_tokens).astype("int32")
    mean = (model.predict(x, verbose=0) + model.predict(rc, verbose=0)) / 2
    np.testing.assert_allclose(both.predict(x, verbose=0), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both.predict(rc, verbose=0), both.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    both.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), both.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    assert onehot_model(loaded).input.shape == (None, 112, 5), "saliency still starts at the one-hot input"


def test_reverse_complement_average_needs_one_onehot_input() -> None:
    inp = keras.Input((112, 5))
    with pytest.raises(ValueError, match="exactly one onehot_input block; found 0"):
        reverse_complement_average(keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(inp))))


def test_se_block_rescales_channels_by_a_sigmoid_gate() -> None:
    x = np.random.default_rng(0).normal(size=(2, 10, 6)).astype("float32")
    se = SEBlock(ratio=3)
    y = keras.ops.convert_to_numpy(se(x))
    w1, b1, w2, b2 = (keras.ops.convert_to_numpy(w) for w in se.weights)
    assert w1.shape == (6, 2)
    gate = 1 / (1 + np.exp(-(np.maximum(x.mean(1) @ w1 + b1, 0) @ w2 + b2)))
    np.testing.assert_allclose(y, x * gate[:, None, :], rtol=1e-5, atol=1e-6)


def test_encoder_ports_and_se_off() -> None:
    x = np.zeros((1, 112, 5), "float32")
    enc = SEConvEncoder(filters=8, kernel_size=5)
    out, skip = enc(x)
    assert tuple(out.shape) == (1, 56, 8) and tuple(skip.shape) == (1, 112, 8)
    no_se = SEConvEncoder(filters=8, kernel_size=5, se_ratio=None)
    no_se(x)
    se_params = 2 * (8 * 4 + 4 + 4 * 8 + 8)
    assert enc.count_params() - no_se.count_params() == se_params
    flat = SEConvEncoder(filters=8, kernel_size=5, downsample=False)
    out, skip = flat(x)
    assert tuple(out.shape) == (1, 112, 8)


def test_decoder_with_and_without_skip() -> None:
    x, skip = np.ones((2, 14, 16), "float32"), np.ones((2, 28, 4), "float32")
    assert tuple(TransposeConvDecoder(filters=8, kernel_size=3)([x, skip]).shape) == (2, 28, 8)
    assert tuple(TransposeConvDecoder(filters=8, kernel_size=3)(x).shape) == (2, 28, 8)


def test_position_encoding_modes_match_their_formulas() -> None:
    x = np.ones((1, 14, 4), "float32")
    mul = keras.ops.convert_to_numpy(PositionEncoding(mode="multiply_sin")(x))
    expected = np.sin(np.arange(14) * 111 / 14)
    np.testing.assert_allclose(mul[0, :, 0], expected, atol=1e-5)
    assert mul[0, 0, 0] == 0.0
    add = keras.ops.convert_to_numpy(PositionEncoding(mode="add")(np.zeros((1, 14, 4), "float32")))
    pos, i = np.arange(14)[:, None], np.arange(4)[None, :]
    angle = pos / 10000 ** (2 * (i // 2) / 4)
    np.testing.assert_allclose(add[0], np.where(i % 2 == 0, np.sin(angle), np.cos(angle)), atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        PositionEncoding(mode="concat")


def test_transformer_branches_count_blocks() -> None:
    x = np.zeros((1, 14, 8), "float32")
    one, crm = TransformerEncoder(2, 4, 8, branches=[1]), TransformerEncoder(2, 4, 8)
    one(x)
    crm(x)
    assert crm.count_params() == 8 * one.count_params()


def test_transformer_parallel_stage_sums_its_branches() -> None:
    x = np.random.default_rng(1).normal(size=(1, 14, 8)).astype("float32")
    layer = TransformerEncoder(2, 4, 8, dropout=0.0, branches=[2])
    y = keras.ops.convert_to_numpy(layer(x))
    a, b = layer.stages[0]
    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(a(x) + b(x)), rtol=1e-5, atol=1e-5)


def test_mlp_head_checks_dropout_length() -> None:
    with pytest.raises(ValueError, match=r"^dropout: "):
        MLPHead(units=[8, 4], dropout=[0.1])
    assert MLPHead(units=[8, 4], dropout=0.1).get_config()["dropout"] == 0.1


def test_canonical_crmnet_has_the_reference_parameter_count() -> None:
    model = assemble(load_graph(GRAPHS / "crmnet.yaml"))
    assert parameter_counts(model) == {"total": 34_170_289, "trainable": 34_165_681, "non_trainable": 4_608}
    assert model.input.shape == (None, 112) and model.output.shape == (None, 1)


def test_small_crmnet_is_a_quarter_width_copy(real_tokens: np.ndarray) -> None:
    model = assemble(load_graph(GRAPHS / "crmnet_small.yaml"))
    assert parameter_counts(model)["total"] == 962_989
    assert [layer.name for layer in model.layers[1:]] == [
        "onehot", "enc1", "enc2", "enc3", "enc4", "pos", "trunk", "dec1", "dec2", "dec3", "convs", "head",
    ]  # fmt: skip
    assert model.predict(real_tokens, verbose=0).shape == (12, 1)


@pytest.mark.parametrize(
    ("params", "total"),
    [({"depth": 2, "filters": 16, "num_heads": 2, "key_dim": 8, "ff_dim": 8}, None), ({"transformer": False}, None)],
)
def test_template_variants_build(params: dict, total: int | None) -> None:
    model = assemble(parse_graph({"template": {"name": "crmnet_unet", "params": params}}, "t.yaml"))
    names = {layer.name for layer in model.layers}
    assert ("trunk" in names) == params.get("transformer", True)
    assert sum(n.startswith("dec") for n in names) == params.get("depth", 3)


def test_keras_file_saved_by_the_previous_code_loads_with_the_same_predictions() -> None:
    from crmlab.runners.data import encode

    model = keras.saving.load_model(LEGACY / "tiny_graph_v0.keras")
    tokens = encode([row["seq"] for row in read_rows("vaishnav_native_complex_3929.tsv", 8)]).astype("int32")
    expected = np.load(LEGACY / "tiny_graph_v0_predictions.npy")
    np.testing.assert_allclose(model.predict(tokens, verbose=0), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_sub_layers_follow_the_block_dtype_policy(dtype: str) -> None:
    x = np.random.default_rng(2).normal(size=(2, 16, 8)).astype("float32")
    compute = "float32" if dtype == "float32" else "float16"
    for layer in (SEBlock(dtype=dtype), SEConvEncoder(8, 3, dtype=dtype), TransformerEncoder(2, 4, 8, dtype=dtype)):
        outs = layer(x)
        for out in outs if isinstance(outs, tuple) else (outs,):
            assert keras.backend.standardize_dtype(out.dtype) == compute, type(layer).__name__
        assert {keras.backend.standardize_dtype(w.dtype) for w in layer.weights} == {"float32"}
    head = MLPHead(units=[8], dropout=0.1, dtype=dtype)
    assert keras.backend.standardize_dtype(head(x).dtype) == "float32"
    assert head.compute_output_spec(keras.KerasTensor((None, 16, 8), dtype=compute)).dtype == "float32"


# crmnet_unet parameter -> (block class, its constructor parameter): the template's default must be the block's.
TEMPLATE_DEFAULTS = {
    "kernel_size": [(cls, "kernel_size") for cls in (SEConvEncoder, TransposeConvDecoder, SEConvStack)],
    "se_ratio": [(cls, "se_ratio") for cls in (SEConvEncoder, TransposeConvDecoder, SEConvStack)],
    "dropout": [(SEConvEncoder, "dropout")],
    "num_heads": [(TransformerEncoder, "num_heads")],
    "key_dim": [(TransformerEncoder, "key_dim")],
    "ff_dim": [(TransformerEncoder, "ff_dim")],
    "transformer_dropout": [(TransformerEncoder, "dropout")],
    "branches": [(TransformerEncoder, "branches")],
    "stack_filters": [(SEConvStack, "filters")],
    "head_units": [(MLPHead, "units")],
    "head_dropout": [(MLPHead, "dropout")],
}


@pytest.mark.parametrize("param", sorted(TEMPLATE_DEFAULTS))
def test_template_defaults_are_the_block_defaults(param: str) -> None:
    template_default = inspect.signature(crmnet_unet).parameters[param].default
    for cls, name in TEMPLATE_DEFAULTS[param]:
        assert inspect.signature(cls).parameters[name].default == template_default, f"{cls.__name__}.{name}"


def test_template_writes_the_block_defaults_it_does_not_expose() -> None:
    nodes = crmnet_unet()["nodes"]
    assert nodes["head"]["params"]["negative_slope"] == inspect.signature(MLPHead).parameters["negative_slope"].default
    assert nodes["convs"]["params"]["batch_norm"] == inspect.signature(SEConvStack).parameters["batch_norm"].default
