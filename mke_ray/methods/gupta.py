"""Gupta et al., "Cross modal distillation for supervision transfer" (CVPR 2016), as a baseline of the MKE paper's
Table 4 (45.65 mIoU on NYU Depth V2).

Supervision transfer trains a network for an unlabeled modality (depth) to reproduce, on paired images, a
mid-level representation of a network trained on a labeled modality (RGB): an L2 loss between the new network's
features (through a transformation where the shapes differ) and the frozen RGB network's at the same layer. That
network is then fine-tuned on the task; for RGB-D the RGB and depth detectors are combined. Adapted to MKE (the
paper's Table 4 compares it on the same unlabeled RGB-D frames and the same teacher):

- stage 1, supervision transfer: the new modality's network (the task's unimodal network for it: for NYU a
  DeepLabV3 on depth with the teacher's backbone) learns, through its layers up to the representation its head
  reads (the last feature map of the trunk, the analogue of the pool5 the paper transfers at; the features its
  last layer reads for MLPs and the fusion classifiers), to match the frozen teacher's features at the same place,
  mean squared error, on the paired unlabeled data after the task's augmentation; where the channels differ a
  learned linear map (1x1 convolution on feature maps) carries the student's features to the teacher's, and is
  dropped afterwards;
- stage 2, fine-tuning: the whole new-modality network on the teacher's pseudo labels (there are no labels of
  the new modality in MKE), with the task's loss;
- the prediction for a multimodal input: the mean of the teacher's logits (on its modality) and the new network's
  (on its own), the late fusion of the paper's RGB-D detector.

``transfer_share`` of the epochs go to stage 1 and the rest to stage 2 (at least one each): the paper gives no
ratio for a fixed budget, so each stage gets half. The history's stage-1 records carry ``transfer_loss`` and
``stage`` 1; stage 2 continues the epoch count. Under Ray Train each stage's module is wrapped in its own
DistributedDataParallel (``methods.crossmodal.parallel_like``).

What we could confirm: from the paper's abstract and public summaries of it, supervision transfer as matching
mid-level representations of the paired labeled modality's network with an L2 distance, through a transformation,
used as pre-training for the new modality; from the authors' released detection code (the paper's distillation
branch of Fast R-CNN), that the depth network is then trained on the task from the supervision-transfer weights,
and that the RGB-D model is the two separately trained networks with their class scores averaged (weights 0.5 and
0.5); from a public training script of the method, a mean-squared-error criterion against the frozen RGB network's
output. Assumptions: the layer matched in each of this project's networks; the new network's initialisation (the
seed's random weights, as every student here; that script starts the depth network as a copy of the RGB one,
which cannot carry over to networks of other shapes, e.g. 2D audio to 3D video); the even split of epochs.
"""

from __future__ import annotations

import torch.nn.functional as F

from mke_ray.methods.base import Student, register
from mke_ray.methods.crossmodal import (CrossModal, evaluated, new_network, parallel_like, plain, teacher_network,
                                        teacher_targets)
from mke_ray.models.crossmodal import LateFusion, Trunk, matching


def feature_loss(features, target):
    """Mean squared error between the student's (transformed) features and the teacher's."""
    return F.mse_loss(features.float(), target.float())


@register
class Gupta(CrossModal):
    """Supervision transfer: the new modality's network matches the teacher's features on the paired unlabeled
    data, is then fine-tuned on the pseudo labels, and predicts with the teacher (late fusion)."""

    name, label, learns_from = "gupta", "Gupta et al.", "features"
    uses_teacher_modality = True
    transfer_share = 0.5  # share of the epochs spent on supervision transfer (stage 1)

    def network(self, task, regularization):
        return LateFusion(teacher_network(task), new_network(task, regularization))

    def prepare(self, task, trial, teacher) -> Student:
        teacher_net, x, new = self.prepare_parts(task, trial, teacher)
        transform = matching(new.net, teacher_net.net)  # drawn right after the network: the trial's stream
        augment = self.augmentation(task, trial.regularization)
        transfer = teacher_targets(augment, teacher_net, lambda net, x, y: net.embed(x).float())
        return Student(self, trial, self.modalities(task), LateFusion(teacher_net, new), x, teacher.labels,
                       task.loss_fn(), augment, extra={"transform": transform, "transfer_augment": transfer})

    def stages(self, epochs: int) -> tuple[int, int]:
        """Epochs of supervision transfer and of fine-tuning: ``transfer_share`` of ``epochs``, at least one each."""
        first = min(max(1, round(self.transfer_share * epochs)), max(1, epochs - 1))
        return first, max(1, epochs - first)

    def train(self, student: Student, fit, **options):
        first, second = self.stages(options.pop("epochs"))
        fused = plain(student.model)
        if options.get("device") is not None:  # the whole fused network where stage 1 trains its trunk: probes
            fused.to(options["device"])         # measure it between the stages
        options = evaluated(options, fused)
        score = options.pop("score")  # the fused model's validation score picks stage 2's best epoch only
        trunk = parallel_like(student.model, Trunk(fused.student, student.extra["transform"]))
        history = fit(trunk, student.x, student.y, epochs=first, loss_fn=feature_loss,
                      augment=student.extra["transfer_augment"], **options)
        history = [{**{("transfer_loss" if k == "train_loss" else k): v for k, v in r.items()}, "stage": 1.0}
                   for r in history]
        tuned = fit(parallel_like(student.model, fused.student), student.x, student.y, epochs=second,
                    loss_fn=student.loss_fn, augment=student.augment, score=score, **options)
        fused.eval()
        return history + [{**r, **{k: r[k] + first for k in ("epoch", "best_epoch") if k in r}, "stage": 2.0}
                          for r in tuned]
