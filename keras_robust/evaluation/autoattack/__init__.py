"""AutoAttack (Croce & Hein, ICML 2020) in TensorFlow: APGD-CE, APGD-T, FAB-T and Square.

`autoattack(model, images, labels, norm, eps)` runs the standard version
(`ensemble`), the way RobustBench ranks models.
"""
