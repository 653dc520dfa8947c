"""Write digits_halves.csv: scikit-learn's bundled 8x8 digits (UCI optical digits) cut into two modalities.

``l0..l31`` are the left half of each image (columns 0-3, row by row), ``r0..r31`` the right
half (columns 4-7), ``digit`` the label. Run from anywhere: ``python sweeps/data/make_digits_halves.py``.
"""

from pathlib import Path

import pandas as pd
from sklearn.datasets import load_digits


def main() -> None:
    digits = load_digits()
    images = digits.images.astype(int)  # (1797, 8, 8), gray levels 0..16
    left = images[:, :, :4].reshape(len(images), -1)
    right = images[:, :, 4:].reshape(len(images), -1)
    frame = pd.concat([pd.DataFrame(left).add_prefix("l"), pd.DataFrame(right).add_prefix("r")], axis=1)
    frame["digit"] = digits.target
    frame.to_csv(Path(__file__).with_name("digits_halves.csv"), index=False)


if __name__ == "__main__":
    main()
