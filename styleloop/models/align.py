"""Alignment training (FROMAGe-style): frozen backbones, small trained heads.

* projection heads map the frozen image features and text features of the prepared
  encoder into one shared, L2-normalised space, trained with a symmetric InfoNCE loss
  (learnable temperature) on catalog (photo, title) and (photo, attribute caption) pairs,
  early-stopped on validation text→image Recall@10;
* attribute heads (article type, colour, usage, master and sub category) classify the
  frozen image features plus colour statistics of the foreground pixels, with
  probabilities calibrated by temperature scaling on the validation split.

The train/validation split is made by product id (a hash), so no product is ever on
both sides. Features come from the ONNX towers of the prepared encoder and are cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F  # noqa: N812
from tqdm import tqdm

from styleloop.catalog import ATTRIBUTES, CatalogError, Product, load_products
from styleloop.models.heads import (
    AttributeClassifier,
    ColourStatistics,
    ProjectionHeads,
    align_folder,
    attribute_inputs,
    load_heads,
    save_heads,
)
from styleloop.models.manifest import EncoderManifest, load_manifest
from styleloop.models.preprocess import preprocess_image

FEATURE_VERSION = 2


def is_validation(product_id: str, fraction: float) -> bool:
    """The split is a pure function of the product id: stable, and never leaks."""
    bucket = int(hashlib.sha1(product_id.encode()).hexdigest(), 16) % 10_000
    return bucket < fraction * 10_000


@dataclass
class Features:
    ids: list[str]
    image: np.ndarray
    colour: np.ndarray
    title: np.ndarray
    caption: np.ndarray

    def select(self, mask: np.ndarray) -> Features:
        """The rows where ``mask`` is true."""
        return Features(
            [i for i, keep in zip(self.ids, mask, strict=True) if keep],
            self.image[mask],
            self.colour[mask],
            self.title[mask],
            self.caption[mask],
        )


def backbone_manifest(models_dir: Path) -> EncoderManifest:
    """The frozen towers that features come from (``models prepare`` writes them)."""
    manifest = load_manifest(models_dir)
    if manifest is None or manifest.backbone is None:
        raise CatalogError(f"no prepared encoder in {models_dir}; run `styleloop models prepare`")
    return manifest.backbone


def colour_module(spec: EncoderManifest) -> ColourStatistics:
    """Colour statistics of the pixel_values this encoder's image tower gets."""
    return ColourStatistics(spec.image.preprocessing.mean, spec.image.preprocessing.std)


def extract_features(
    products: Sequence[Product], models_dir: Path, cache_dir: Path, progress: bool = True
) -> Features:
    """Frozen features from the prepared encoder's ONNX towers, cached by content."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    spec = backbone_manifest(models_dir)
    colour = colour_module(spec)
    key = hashlib.sha256(
        json.dumps(
            [
                FEATURE_VERSION,
                spec.model_version,
                [(p.id, p.title, p.caption, str(p.image)) for p in products],
            ]
        ).encode()
    ).hexdigest()[:16]
    cache = cache_dir / f"features-{key}.npz"
    if cache.is_file():
        data = np.load(cache)
        return Features(
            [str(i) for i in data["ids"]],
            data["image"],
            data["colour"],
            data["title"],
            data["caption"],
        )
    image_session = ort.InferenceSession(
        str(models_dir / spec.image.onnx), providers=["CPUExecutionProvider"]
    )
    text_session = ort.InferenceSession(
        str(models_dir / spec.text.onnx), providers=["CPUExecutionProvider"]
    )
    tokenizer = Tokenizer.from_file(str(models_dir / spec.text.tokenizer))
    tokenizer.enable_truncation(spec.text.max_length)
    tokenizer.enable_padding(pad_id=spec.text.pad_token_id)
    image_rows, colour_rows = [], []
    batches = range(0, len(products), 32)
    for start in tqdm(batches, desc="image features", unit="batch", disable=not progress):
        images = [Image.open(p.image) for p in products[start : start + 32]]
        pixels = np.stack([preprocess_image(im, spec.image.preprocessing) for im in images])
        image_rows.append(image_session.run(None, {"pixel_values": pixels})[0])
        with torch.no_grad():
            colour_rows.append(colour(torch.from_numpy(pixels)).numpy())

    def embed(texts: list[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), 64):
            encodings = tokenizer.encode_batch(texts[start : start + 64])
            rows.append(
                text_session.run(
                    None,
                    {
                        "input_ids": np.asarray([e.ids for e in encodings], np.int64),
                        "attention_mask": np.asarray(
                            [e.attention_mask for e in encodings], np.int64
                        ),
                    },
                )[0]
            )
        return np.concatenate(rows)

    features = Features(
        [p.id for p in products],
        np.concatenate(image_rows),
        np.concatenate(colour_rows),
        embed([p.title for p in products]),
        embed([p.caption for p in products]),
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        ids=np.asarray(features.ids),
        image=features.image,
        colour=features.colour,
        title=features.title,
        caption=features.caption,
    )
    return features


def recall_at(
    queries: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Row i of ``queries`` should find row i of ``gallery``; both L2-normalised."""
    scores = queries @ gallery.T
    rank = (scores > scores.diag()[:, None]).sum(dim=1)
    return {f"R@{k}": float((rank < k).float().mean()) for k in ks}


@dataclass
class TrainReport:
    epochs: int
    best_epoch: int
    losses: list[float] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)


def supervised_contrastive(
    embedded: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """SupCon (Khosla et al. 2020): each row's positives are the other rows of its label."""
    n = len(labels)
    self_mask = torch.eye(n, dtype=torch.bool)
    logits = (embedded @ embedded.T / temperature).masked_fill(self_mask, -1e9)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(dim=1)
    has = count > 0
    if not has.any():
        return embedded.sum() * 0
    mean_log_prob = (log_prob * positives).sum(dim=1)[has] / count[has]
    return -mean_log_prob.mean()


def train_projection(
    features: Features,
    validation: np.ndarray,
    *,
    dim: int = 256,
    seed: int = 0,
    max_epochs: int = 200,
    patience: int = 15,
    batch_size: int = 512,
    lr: float = 2e-3,
    kinds: Sequence[str] | None = None,
    kind_weight: float = 0.5,
    use_colour: bool = True,
    progress: bool = True,
) -> tuple[ProjectionHeads, TrainReport]:
    """Symmetric InfoNCE over (photo, title or caption) pairs; early stopping on the
    validation split's title→photo Recall@10. With ``kinds`` (article type per product),
    a supervised contrastive term (weight ``kind_weight``) also pulls photos of one type
    together, for image→image neighbours."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    title = torch.from_numpy(features.title).float()
    caption = torch.from_numpy(features.caption).float()
    colour = torch.from_numpy(features.colour).float()
    train_mask = torch.from_numpy(~validation)
    val_mask = torch.from_numpy(validation)
    heads = ProjectionHeads(
        features.image.shape[1], title.shape[1], dim, colour.shape[1] if use_colour else 0
    )
    if use_colour:
        heads.colour_mean.copy_(colour[train_mask].mean(0))
        heads.colour_std.copy_(colour[train_mask].std(0) + 1e-6)
    image = heads.image_inputs(torch.from_numpy(features.image).float(), colour)
    optimiser = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=1e-4)
    images, titles, captions = image[train_mask], title[train_mask], caption[train_mask]
    kind_ids = torch.tensor(
        [sorted(set(kinds)).index(k) for k in kinds] if kinds else [0] * len(image)
    )[train_mask]
    report = TrainReport(epochs=0, best_epoch=-1)
    best_state: dict[str, torch.Tensor] | None = None
    best_score, waited = -1.0, 0
    bar = tqdm(range(max_epochs), desc="train align", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(images), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:
                continue
            use_caption = torch.rand(len(index), generator=generator) < 0.5
            texts = torch.where(use_caption[:, None], captions[index], titles[index])
            embedded = heads.project_image(images[index])
            logits = heads.log_scale.exp().clamp(max=100) * (embedded @ heads.project_text(texts).T)
            labels = torch.arange(len(index))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            if kind_weight:
                loss = loss + kind_weight * supervised_contrastive(embedded, kind_ids[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, count = total + loss.item() * len(index), count + len(index)
        report.losses.append(total / max(count, 1))
        report.epochs = epoch + 1
        if val_mask.sum() < 2:
            continue
        with torch.no_grad():
            metrics = recall_at(
                heads.project_text(title[val_mask]), heads.project_image(image[val_mask])
            )
        bar.set_postfix(loss=f"{report.losses[-1]:.3f}", r10=f"{metrics['R@10']:.3f}")
        if metrics["R@10"] > best_score:
            best_score, waited, report.best_epoch, report.validation = (
                metrics["R@10"],
                0,
                epoch,
                metrics,
            )
            best_state = {k: v.detach().clone() for k, v in heads.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        heads.load_state_dict(best_state)
    return heads, report


def feature_inputs(features: Features) -> torch.Tensor:
    """The attribute classifiers' inputs for cached features (as the fused graph builds them)."""
    return attribute_inputs(
        torch.from_numpy(features.image).float(), torch.from_numpy(features.colour).float()
    )


def train_attribute(
    name: str,
    inputs: torch.Tensor,
    labels: Sequence[str],
    validation: np.ndarray,
    *,
    seed: int = 0,
    hidden: int = 256,
    epochs: int = 30,
    batch_size: int = 256,
) -> AttributeClassifier:
    """A classifier on standardised inputs (one hidden layer, or multinomial logistic
    regression with ``hidden=0``), trained with mini-batches; its temperature is then fitted
    on the validation split (calibration)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classes = sorted(set(labels))
    target = torch.tensor([classes.index(label) for label in labels])
    train, val = torch.from_numpy(~validation), torch.from_numpy(validation)
    classifier = AttributeClassifier(name, classes, inputs.shape[1], hidden)
    classifier.mean.copy_(inputs[train].mean(0))
    classifier.std.copy_(inputs[train].std(0) + 1e-6)
    optimiser = torch.optim.AdamW(classifier.net.parameters(), lr=1e-3, weight_decay=1e-2)
    x, y = inputs[train], target[train]
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(classifier.logits(x[index]), y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    classifier.eval()
    if val.sum() > 0:
        with torch.no_grad():
            logits = classifier.logits(inputs[val])
        classifier.temperature.fill_(fit_temperature(logits, target[val]))
    return classifier


# LBFGS on the temperature can step to log T = -10 or NaN (a CI run's text tower then gave
# NaN vectors); the temperature is kept in this range, and 1 when the fit diverged.
LOG_TEMPERATURE = (math.log(0.05), math.log(20.0))


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The temperature minimising the validation NLL (calibration), within range."""
    log_t = torch.zeros(1, requires_grad=True)
    fit = torch.optim.LBFGS([log_t], lr=0.1, max_iter=50)

    def closure() -> torch.Tensor:
        fit.zero_grad()
        nll = F.cross_entropy(logits / log_t.clamp(*LOG_TEMPERATURE).exp(), target)
        nll.backward()
        return nll

    fit.step(closure)  # type: ignore[no-untyped-call]
    value = float(log_t.detach().clamp(*LOG_TEMPERATURE).exp())
    return value if math.isfinite(value) else 1.0


def ridge_baseline(
    features: Features, train: np.ndarray, lam: float = 1.0
) -> Callable[[np.ndarray], np.ndarray]:
    """The baseline to beat: least squares from image features into the text space."""
    x, y = features.image[train].astype(np.float64), features.title[train].astype(np.float64)
    weights = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
    return lambda images: (images @ weights).astype(np.float32)


def run_training(
    catalog: Path,
    models_dir: Path,
    *,
    seed: int = 0,
    dim: int = 256,
    validation_fraction: float = 0.15,
    max_epochs: int = 200,
    type_weight: float = 0.3,
    progress: bool = True,
) -> dict[str, Any]:
    """`styleloop train align`: features (cached), projection and attribute heads, saved
    under ``MODELS_DIR/align``. ``type_weight`` > 0 appends article-type probabilities to
    both sides' vectors (see :class:`ProjectionHeads`). Returns what it measured."""
    import time

    started = time.perf_counter()
    products = load_products(catalog)
    features = extract_features(products, models_dir, models_dir / ".cache", progress)
    validation = np.asarray([is_validation(p.id, validation_fraction) for p in products])
    heads, report = train_projection(
        features,
        validation,
        dim=dim,
        seed=seed,
        max_epochs=max_epochs,
        kinds=[p.attributes["article_type"] for p in products],
        progress=progress,
    )
    inputs = feature_inputs(features)
    attributes = [
        train_attribute(name, inputs, [p.attributes[name] for p in products], validation, seed=seed)
        for name in ATTRIBUTES
    ]
    if type_weight:
        image_type = next(a for a in attributes if a.name == "article_type")
        text_type = train_attribute(
            "article_type",
            torch.from_numpy(features.title).float(),
            [p.attributes["article_type"] for p in products],
            validation,
            seed=seed,
            hidden=0,
        )
        heads.set_types(copy.deepcopy(image_type), text_type, type_weight)
    ridge = ridge_baseline(features, ~validation)
    backbone = backbone_manifest(models_dir)
    meta = {
        "backbone_model_id": backbone.model_id,
        "backbone_version": backbone.model_version,
        "catalog": str(catalog),
        "products": len(products),
        "validation_products": int(validation.sum()),
        "validation_fraction": validation_fraction,
        "seed": seed,
        "dim": dim,
        "colour_dim": heads.colour_dim,
        "colour_stats_dim": int(features.colour.shape[1]),
        "type_classes": heads.text_type.classes if heads.text_type else [],
        "type_weight": heads.type_weight,
        "type_hidden": heads.image_type.hidden if heads.image_type else 0,
        "image_dim": int(features.image.shape[1]),
        "text_dim": int(features.title.shape[1]),
        "epochs": report.epochs,
        "best_epoch": report.best_epoch,
        "losses": report.losses,
        "validation": report.validation,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    save_heads(align_folder(models_dir), heads, colour_module(backbone), attributes, meta)
    np.save(
        align_folder(models_dir) / "ridge.npy",
        ridge(np.eye(features.image.shape[1], dtype=np.float32)),
    )
    return meta


def precision_at_5(vectors: torch.Tensor, labels: Sequence[str]) -> float:
    scores = vectors @ vectors.T
    scores.fill_diagonal_(-math.inf)
    top = scores.topk(min(5, len(labels) - 1), dim=1).indices
    same = [[labels[j] == labels[i] for j in row] for i, row in enumerate(top.tolist())]
    return float(np.mean(same))


def run_evaluation(
    catalog: Path, models_dir: Path, split: str = "all", progress: bool = True, seed: int = 0
) -> dict[str, dict[str, float]]:
    """`styleloop eval retrieval`: the trained heads against a ridge projection and random
    vectors, on every product of ``catalog`` or on its validation split."""
    heads, _, attributes, meta = load_heads(align_folder(models_dir))
    products = load_products(catalog)
    # Features of the whole catalog (cached by training), then the rows evaluated on.
    features = extract_features(products, models_dir, models_dir / ".cache", progress)
    if split == "validation":
        mask = np.asarray([is_validation(p.id, meta["validation_fraction"]) for p in products])
        products = [p for p, keep in zip(products, mask, strict=True) if keep]
        features = features.select(mask)
    if len(products) < 10:
        raise CatalogError(f"only {len(products)} products to evaluate on; need at least 10")
    image = torch.from_numpy(features.image).float()
    title = torch.from_numpy(features.title).float()
    kinds = [p.attributes["article_type"] for p in products]
    with torch.no_grad():
        ours_images = heads.embed_image(image, torch.from_numpy(features.colour).float())
        ours_titles = heads.embed_text(title)
    ridge = np.load(align_folder(models_dir) / "ridge.npy")
    ridge_images = F.normalize(torch.from_numpy(features.image @ ridge).float())
    rng = np.random.default_rng(seed)
    random_images = F.normalize(torch.from_numpy(rng.standard_normal(ours_images.shape)).float())
    random_titles = F.normalize(torch.from_numpy(rng.standard_normal(ours_titles.shape)).float())
    results: dict[str, dict[str, float]] = {
        "styleloop heads": {
            **recall_at(ours_titles, ours_images),
            "P@5 same type": precision_at_5(ours_images, kinds),
        },
        "ridge baseline": {
            **recall_at(F.normalize(title), ridge_images),
            "P@5 same type": precision_at_5(ridge_images, kinds),
        },
        "random vectors": {
            **recall_at(random_titles, random_images),
            "P@5 same type": precision_at_5(random_images, kinds),
        },
    }
    inputs = feature_inputs(features)
    for head in attributes:
        with torch.no_grad():
            predicted = head(inputs).argmax(dim=1).tolist()
        truth = [p.attributes[head.name] for p in products]
        results["styleloop heads"][f"{head.name} acc"] = float(
            np.mean([head.classes[i] == t for i, t in zip(predicted, truth, strict=True)])
        )
    return results
