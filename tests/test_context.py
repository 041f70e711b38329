"""The context model: one object for the coder, the training code length and the fitting."""

import numpy as np
import pytest
import torch

from rgbatch.context import CONTEXT_FEATURES, ContextModel, ContextModelError
from rgbatch.entropy import CODERS, Coder, ContextCoder, EntropyError, RawCoder, register_coder
from rgbatch.rate import ContextRate

from test_entropy import hand_made_model, sticky_codes

BITS, ITERATIONS = 4, 5


@pytest.fixture
def tables():
    return hand_made_model(BITS, ITERATIONS)


def test_a_context_model_gives_its_coder_its_rate_and_its_tensors(tables, rng):
    model = ContextModel.from_tensors(tables)
    assert (model.iterations, model.bits) == (ITERATIONS, BITS)
    assert all(torch.equal(model.tensors()[k], v) for k, v in tables.items())  # what a weight file stores
    codes = sticky_codes(rng, ITERATIONS, [(BITS, 3, 5), (BITS, 2, 4)])
    chunks = model.coder().encode(codes)
    assert chunks == ContextCoder(tables).encode(codes)  # the coder of the weights' tensors
    assert all(np.array_equal(a, b) for a, b in zip(model.coder().decode(chunks, [c.shape[1:] for c in codes]), codes))
    rate, expected = model.rate(), ContextRate(*tables.values())
    assert torch.equal(rate.initial, expected.initial) and torch.equal(rate.features, expected.features)
    bits = torch.from_numpy(np.stack([codes[0]])).float().transpose(0, 1) * 2 - 1  # (T, 1, bits, 3, 5)
    torch.testing.assert_close(rate(bits), expected(bits), rtol=0, atol=0)


def test_a_fitted_model_codes_what_it_was_fitted_on(rng):
    codes = sticky_codes(rng, 3, [(BITS, 6, 6)] * 4)
    model = ContextModel.fit(codes, context_bits=2, workers=1)
    chunks = model.coder().encode(codes)
    assert all(np.array_equal(a, b) for a, b in zip(model.coder().decode(chunks, [c.shape[1:] for c in codes]), codes))
    assert sum(map(len, chunks)) < sum(map(len, RawCoder().encode(codes)))  # sticky bits: cheaper than raw


def test_malformed_or_missing_models_are_refused_in_the_library_s_words(tables):
    with pytest.raises(ContextModelError, match="no context model"):
        ContextModel.from_tensors({})
    with pytest.raises(ContextModelError, match="malformed"):
        ContextModel.from_tensors({**tables, CONTEXT_FEATURES: tables[CONTEXT_FEATURES][:, :, :2]})
    with pytest.raises(EntropyError, match="no context model"):  # the coder words it as a coder error
        ContextCoder({})


def test_every_registered_coder_implements_the_protocol_and_ids_stay_unique():
    assert all(isinstance(cls.__new__(cls), Coder) for cls in CODERS.values())
    assert CODERS[0] is CODERS["raw"] is RawCoder and CODERS[1] is CODERS["context"] is ContextCoder

    class Taken(RawCoder):
        coder_id, name = 0, "taken"

    with pytest.raises(ValueError, match="taken by RawCoder"):
        register_coder(Taken)
    assert "taken" not in CODERS
