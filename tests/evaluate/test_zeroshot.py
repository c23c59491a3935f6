import numpy as np
import pytest
import torch

from ovt.evaluate.zeroshot import build_classifier, imagenet_templates, prompt_words, topk_correct

# Hand-made text space: each prompt word has a direction; templates add a template-specific offset that the
# average over templates must cancel.
WORD = {"chair": [1.0, 0, 0, 0], "table": [0, 1.0, 0, 0], "woman": [0, 0, 1.0, 0]}
TEMPLATES = ["a 3D render of a {}.", "a rendering of a {}."]
OFFSET = {"a 3D render of a": [0, 0, 0, 0.5], "a rendering of a": [0, 0, 0, -0.5]}


def fake_encode_text(texts):
    rows = []
    for t in texts:
        prefix, word = t.rstrip(".").rsplit(" ", 1)
        rows.append(np.add(WORD[word], OFFSET[prefix]))
    return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=-1)


def test_class_weights_are_renormalised_template_means():
    clf = build_classifier(fake_encode_text, ["chair", "table", "female"], TEMPLATES, rename={"female": "woman"})
    w = clf.weights.T.numpy()
    # mean of normalised (1,0,0,±.5) is (0.894, 0, 0, 0): renormalised to the pure class direction
    np.testing.assert_allclose(w, np.eye(4)[:3], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=1e-6)


def test_classifier_predicts_nearest_class_with_fixed_scale():
    clf = build_classifier(
        fake_encode_text, ["chair", "table", "female"], TEMPLATES, rename={"female": "woman"}, scale=100.0
    )
    images = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1, 0, 0], [0.1, 0.2, 0.9, 0]]), dim=-1)
    logits = clf.logits(images)
    assert logits.argmax(dim=1).tolist() == [0, 2]
    assert logits[0, 0].item() == pytest.approx(100.0 * images[0, 0].item(), rel=1e-5)
    assert torch.allclose(clf.probs(images).sum(dim=1), torch.ones(2))


def test_topk_correct():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert topk_correct(logits, np.array([2, 0]), 1).tolist() == [False, True]
    assert topk_correct(logits, np.array([2, 0]), 2).tolist() == [True, True]
    assert topk_correct(logits, np.array([0, 1]), 5).tolist() == [True, True]  # k above C means all


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="duplicate"):
        build_classifier(fake_encode_text, ["chair", "chair"], TEMPLATES)
    with pytest.raises(ValueError, match="slot"):
        build_classifier(fake_encode_text, ["chair"], ["no slot here"])
    clf = build_classifier(fake_encode_text, ["chair"], TEMPLATES)
    with pytest.raises(ValueError, match="dimension"):
        clf.logits(torch.zeros(1, 3))


def test_imagenet_templates_are_the_80_openai_ones():
    t = imagenet_templates()
    assert len(t) == 80 and t[0] == "a bad photo of a {}." and all(x.count("{}") == 1 for x in t)
    assert prompt_words(["plug", "chair"], {"plug": "wall power outlet"}) == ["wall power outlet", "chair"]
