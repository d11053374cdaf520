"""Behaviour users rely on: shapes, invariances, the frozen text tower, gradient checkpointing, a real BERT."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from transformers import AutoModel, AutoTokenizer

from modeling_supreme import SupremeConfig, SupremeECGModel, SupremeModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SupremeModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def ecgs():
    torch.manual_seed(1)
    return torch.rand(4, 12, 5000)


def query_embeds(count, width=32, seed=2):
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def test_default_config_is_the_paper_vit_tiny():
    config = SupremeConfig()
    assert (config.patch_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        125,
        192,
        12,
        3,
    )
    assert (config.intermediate_size, config.projection_dim, config.num_patches) == (768, 256, 40)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers, config.text_config.vocab_size) == (
        768,
        12,
        30522,
    )


def test_shapes(model, ecgs):
    out = model(ecgs, query_embeds=query_embeds(5), output_attentions=True)
    assert out.logits.shape == (4, 5)
    assert out.ecg_embeds.shape == (4, 480, 32)
    assert out.query_embeds.shape == (5, 32)
    assert len(out.cross_attentions) == 2 and out.cross_attentions[-1].shape == (4, 2, 5, 480)
    torch.testing.assert_close(out.cross_attentions[-1].sum(-1), torch.ones(4, 2, 5))
    encoded = model.ecg_model(ecgs)
    assert encoded.last_hidden_state.shape == (4, 480, 32) and encoded.pooler_output.shape == (4, 32)


def test_attention_weights_do_not_change_logits(model, ecgs):
    embeds = query_embeds(3)
    with torch.no_grad():
        plain = model(ecgs, query_embeds=embeds).logits
        eager = model(ecgs, query_embeds=embeds, output_attentions=True).logits
    assert (plain - eager).abs().max() <= 1e-5


def test_one_ecg_alone_equals_it_inside_a_batch(model, ecgs):
    embeds = query_embeds(6)
    with torch.no_grad():
        batch = model(ecgs, query_embeds=embeds).logits
        for i in range(len(ecgs)):
            alone = model(ecgs[i : i + 1], query_embeds=embeds).logits
            assert (alone[0] - batch[i]).abs().max() <= 1e-5


@pytest.mark.parametrize("count", [1, 7, 295])
def test_any_number_of_queries_and_each_query_independent_of_the_others(model, ecgs, count):
    embeds = query_embeds(count)
    with torch.no_grad():
        together = model(ecgs, query_embeds=embeds).logits
        assert together.shape == (4, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(3))
        reordered = model(ecgs, query_embeds=embeds[order]).logits
        assert (reordered - together[:, order]).abs().max() <= 1e-5
        for q in {0, count // 2, count - 1}:
            alone = model(ecgs, query_embeds=embeds[q : q + 1]).logits
            assert (alone[:, 0] - together[:, q]).abs().max() <= 1e-5


def test_tokenised_queries_equal_cached_embeddings(model, ecgs, tokenizer):
    queries = ["atrial fibrillation", "sinus rhythm with first degree av block"]
    tokens = tokenizer(queries, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = model(ecgs, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).logits
        cached = model(ecgs, query_embeds=model.encode_queries(queries, tokenizer, batch_size=1)).logits
    assert (direct - cached).abs().max() <= 1e-6


def test_backward_reaches_everything_but_the_frozen_text_tower(ecgs):
    torch.manual_seed(0)
    model = SupremeModel(tiny_config()).train()
    assert not model.text_model.training, "the frozen text tower must stay in eval mode"
    labels = torch.randint(0, 2, (4, 3)).float()
    out = model(ecgs, query_embeds=query_embeds(3), labels=labels)
    assert out.loss.ndim == 0
    out.loss.backward()
    assert all(p.grad is None for p in model.text_model.parameters())
    for name in ("ecg_model", "ecg_projection", "text_projection", "fusion"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_drop_path_and_dropout_only_in_training(ecgs):
    torch.manual_seed(0)
    model = SupremeModel(tiny_config(drop_path_rate=0.5, fusion_dropout=0.5))
    embeds = query_embeds(3)
    with torch.no_grad():
        model.eval()
        first, second = model(ecgs, query_embeds=embeds).logits, model(ecgs, query_embeds=embeds).logits
        assert torch.equal(first, second)
        model.train()
        noisy = model(ecgs, query_embeds=embeds).logits
    assert (noisy - first).abs().max() > 1e-4


@pytest.mark.parametrize("query_attention", ["self", "all"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(ecgs, query_attention):
    labels = torch.randint(0, 2, (4, 3), generator=torch.Generator().manual_seed(4)).float()
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SupremeModel(tiny_config(fusion_query_attention=query_attention)).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.ecg_model.encoder.layers[0].gradient_checkpointing
            assert model.fusion.layers[0].gradient_checkpointing
        torch.manual_seed(5)  # same drop-path and dropout draws in both runs
        loss = model(ecgs, query_embeds=query_embeds(3), labels=labels).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)


def test_from_text_encoder_with_a_real_pretrained_bert(minilm_path, ecgs):
    model = SupremeModel.from_text_encoder(str(minilm_path), config=tiny_config()).eval()
    assert model.config.text_config.hidden_size == 384
    bert = AutoModel.from_pretrained(minilm_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    queries = ["left bundle branch block", "sinus tachycardia", "inferior myocardial infarction"]
    tokens = tokenizer(queries, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = bert(**tokens).last_hidden_state[:, 0]
        embeds = model.get_query_embeddings(tokens["input_ids"], tokens["attention_mask"])
        logits = model(ecgs, query_embeds=embeds).logits
    assert torch.equal(embeds, expected)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()


def test_bad_queries_are_refused_with_a_clear_message(model, ecgs, tokenizer):
    with pytest.raises(ValueError, match="empty"):
        model(ecgs, query_embeds=torch.zeros(0, 32))
    with pytest.raises(ValueError, match="query_embeds must be"):
        model(ecgs, query_embeds=torch.zeros(3, 768))
    with pytest.raises(ValueError, match="empty"):
        model.encode_queries([], tokenizer)
    with pytest.raises(ValueError, match="input_ids"):
        model(ecgs)
    with pytest.raises(ValueError, match="input_values must be"):
        model(torch.zeros(2, 12, 2500), query_embeds=query_embeds(2))


def test_ecg_model_alone_matches_the_full_models_encoder(model, ecgs):
    alone = SupremeECGModel(model.config).eval()
    alone.load_state_dict(model.ecg_model.state_dict())
    with torch.no_grad():
        assert torch.equal(alone(ecgs).pooler_output, model.ecg_model(ecgs).pooler_output)
