"""Speed report: fields, ratios against the source, and FLOPs equal to a hand count."""

from __future__ import annotations

import pytest

from evaluation_support import tiny_lm
from layerprune.evaluation.runner import speed_report
from layerprune.evaluation.speed import SpeedOptions, flops_per_token, measure_speed
from layerprune.surgery import remove_layers

FAST = SpeedOptions(prompt_len=8, decode_tokens=4, warmup=1, repeats=2)


def test_flops_equal_a_hand_count():
    # tiny llama: d=32, 4 heads of 8, 2 KV heads, MLP 64, 4 layers, vocab 300, context T=16
    q = o = 32 * 32
    k = v = 32 * 16
    mlp = 3 * 32 * 64
    per_layer = q + k + v + o + mlp
    head = 300 * 32
    attention = 2 * 4 * 32 * (16 + 1)
    assert flops_per_token(tiny_lm(), context=16) == 2 * (4 * per_layer + head) + attention


def test_flops_hand_count_gpt2_conv1d():
    # gpt2 tiny: c_attn 32×96, c_proj 32×32, c_fc 32×128, mlp c_proj 128×32; LM head 300×32
    per_layer = 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32
    assert flops_per_token(tiny_lm("gpt2"), context=0) == 2 * (4 * per_layer + 300 * 32) + 2 * 4 * 32


def test_speed_fields():
    report = measure_speed(tiny_lm(), FAST)
    assert report["parameters"] == sum(p.numel() for p in tiny_lm().parameters())
    assert report["layers"] == 4
    assert report["prefill_latency_s"] > 0 and report["decode_tokens_per_s"] > 0
    assert report["peak_memory_kind"] == "peak_rss" and report["peak_memory_bytes"] > 0
    assert report["settings"] == {
        "batch_size": 1,
        "prompt_len": 8,
        "decode_tokens": 4,
        "warmup": 1,
        "repeats": 2,
        "seed": 0,
    }


def test_pruned_model_reports_ratios_against_its_source():
    pruned = remove_layers(tiny_lm(), [2, 3])
    loaded = []

    def load_source(spec, dtype, device):
        loaded.append(spec)
        return tiny_lm()

    report = speed_report(pruned, FAST, source_loader=load_source)
    assert loaded == ["tiny-llama"]
    ratios = report["ratios"]
    assert ratios["ideal_speedup_flops"] == pytest.approx(flops_per_token(tiny_lm(), 8) / flops_per_token(pruned, 8))
    assert 1 < ratios["ideal_speedup_flops"] < 2
    assert ratios["parameter_ratio"] < 1
    assert set(ratios) == {"prefill_speedup", "decode_speedup", "ideal_speedup_flops", "parameter_ratio"}


def test_dense_model_has_no_ratio():
    assert set(speed_report(tiny_lm(), FAST)) == {"model"}
