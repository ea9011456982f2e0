"""DataComp-style grouped averages of a suite's rows (Gadre et al. 2023, `aggregate_scores.py` in
mlfoundations/datacomp): one main metric per task, averaged over

    ImageNet               imagenet1k
    ImageNet dist. shifts  ImageNet-Sketch, -V2, -A, -O, -R, ObjectNet
    VTAB                   Caltech-101, CIFAR-100, CLEVR Counts and Distance, DTD, EuroSAT, KITTI distance,
                           Flowers-102, Pets, PatchCamelyon, RESISC45, SVHN, SUN397
    Retrieval              Flickr30k, MS-COCO, WinoGAViL (the rows of every kind whose group is Retrieval:
                           retrieval and association rows, whatever their data)
    Average                every ranked row; over DataComp's 38 tasks (`DATACOMP_TASKS`: tasklist.yml less
                           FairFace and UTKFace, which have no main metric) it is DataComp's headline number
    DataComp average       when the suite also ranks other rows: the average over its DataComp tasks alone

The main metric is DataComp's, as each task kind declares it (`TaskKind.main_metric`): mean per-class recall on
Caltech-101, FGVC-Aircraft, Flowers-102 and Pets, macro F1 on iWildCam, worst-region top-1 on FMoW and GeoDE,
worst-income top-5 on Dollar Street, top-1 elsewhere, the mean of both directions' recall@1 for retrieval, the
Jaccard index of 10-12-candidate games for WinoGAViL, mAP for a multi-label set. Linear-probe
rows are not zero-shot results and join no group. A group reports how many of its datasets the suite ran:
a partial group is an average over fewer datasets than DataComp's, and says so.
"""

from __future__ import annotations

from typing import Any

from clipmodule.eval.names import dataset_key
from clipmodule.eval.tasks import task_kind
from clipmodule.eval.tasks.kind import BY_DATASET

GROUPS = {
    "ImageNet": ("imagenet1k",),
    "ImageNet dist. shifts": ("imagenet_sketch", "imagenetv2", "imagenet-a", "imagenet-o", "imagenet-r", "objectnet"),
    "VTAB": ("caltech101", "cifar100", "clevr_count_all", "clevr_closest_object_distance", "dtd", "eurosat",
             "kitti_closest_vehicle_distance", "flowers", "pets", "pcam", "resisc45", "svhn", "sun397"),
    "Retrieval": ("flickr30k", "mscoco_captions", "winogavil"),
}
DATACOMP_TASKS = (
    *GROUPS["ImageNet"], *GROUPS["ImageNet dist. shifts"], *GROUPS["VTAB"], *GROUPS["Retrieval"],
    "cifar10", "country211", "fgvc_aircraft", "food101", "gtsrb", "mnist", "voc2007", "renderedsst2", "cars", "stl10",
    "wilds/iwildcam", "wilds/camelyon17", "wilds/fmow", "dollar_street", "geode",
)
"""The 38 tasks DataComp averages (mlfoundations/datacomp aggregate_scores.py asserts 38 rows)."""
MLFLOW_NAMES = {"ImageNet": "imagenet", "ImageNet dist. shifts": "imagenet_shifts", "VTAB": "vtab",
                "Retrieval": "retrieval", "Average": "all", "DataComp average": "datacomp"}


def main_metric(row: dict[str, Any]) -> tuple[str, float] | None:
    """(metric name, value) DataComp ranks the row by (its task kind's), or None (a linear probe, or a row
    without it)."""
    return task_kind(row["task"]).main_metric(row["metrics"], row_dataset(row))


def row_dataset(row: dict[str, Any]) -> str | None:
    """The benchmark dataset a row evaluates (`names.dataset_key` of its data), None for other data."""
    return dataset_key(str(row.get("dataset") or ""))


def grouped_averages(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{group, score, count, of}] for every group with at least one row; `of` is the group's size in
    DataComp (38 for an Average over DataComp's tasks only; None for rows on other data)."""
    scored = [(row, main_metric(row)) for row in rows]
    scored = [(row, metric[1]) for row, metric in scored if metric is not None]
    out = []
    for group, members in GROUPS.items():
        of = len(members)
        own = [(row, value) for row, value in scored if task_kind(row["task"]).group == group]
        if own:  # a kind that is a group of its own (retrieval): every row of it, whatever its data
            chosen = own
            of = of if all(row_dataset(row) in members for row, _ in chosen) else None
        else:
            chosen = [(row, value) for row, value in scored
                      if task_kind(row["task"]).group == BY_DATASET and row_dataset(row) in members]
        if chosen:
            values = [value for _, value in chosen]
            out.append({"group": group, "score": sum(values) / len(values), "count": len(values), "of": of})
    if scored:
        ours = [value for row, value in scored if row_dataset(row) in DATACOMP_TASKS]
        datacomp = len(ours) == len(scored)
        out.append({"group": "Average", "score": sum(value for _, value in scored) / len(scored),
                    "count": len(scored), "of": len(DATACOMP_TASKS) if datacomp else None})
        if ours and not datacomp:  # other rows too: DataComp's average over its own tasks alone, beside it
            out.append({"group": "DataComp average", "score": sum(ours) / len(ours), "count": len(ours),
                        "of": len(DATACOMP_TASKS)})
    return out


def group_metrics(groups: list[dict[str, Any]]) -> dict[str, float]:
    """The groups as MLflow metrics: `avg/imagenet`, `avg/imagenet_shifts`, `avg/vtab`, `avg/retrieval`, `avg/all`
    (and `avg/datacomp`)."""
    return {f"avg/{MLFLOW_NAMES[group['group']]}": group["score"] for group in groups}


def markdown_lines(groups: list[dict[str, Any]]) -> list[str]:
    if not groups:
        return []
    lines = ["", "Grouped averages (DataComp's main metric per task, in percent):", "",
             "| group | score | tasks |", "|---|---|---|"]
    for group in groups:
        count = f"{group['count']}" if group["of"] is None else f"{group['count']} of {group['of']}"
        lines.append(f"| {group['group']} | {100 * group['score']:.2f} | {count} |")
    return lines
