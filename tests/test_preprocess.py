"""refnet.blob_from_image against cv2.dnn.blobFromImage (bit-exact: both resize with cv2.resize)."""

import cv2
import numpy as np
import pytest

import refnet
from refnet.errors import ShapeError

CASES = [
    dict(scale=1 / 255, size=(320, 240), mean=(104, 117, 123), swap_rb=True, crop=False),
    dict(scale=1 / 128, size=(300, 300), mean=(127.5, 127.5, 127.5), swap_rb=False, crop=True),
    dict(scale=0.5, size=(224, 224), mean=(1, 2, 3), swap_rb=True, crop=True),
    dict(scale=1.0, size=(97, 41), mean=127.0, swap_rb=False, crop=False),  # scalar mean: channel 0 only, as cv2
    dict(),
]


@pytest.mark.parametrize("kw", CASES)
def test_matches_cv2_on_photos(images_dir, kw):
    for name in ("caffe_cat.jpg", "darknet_dog.jpg", "voc2007_000001.jpg"):
        img = cv2.imread(str(images_dir / name))
        a = refnet.blob_from_image(img, **kw)
        b = cv2.dnn.blobFromImage(img, scalefactor=kw.get("scale", 1.0), size=kw.get("size", (0, 0)),
                                  mean=kw.get("mean", 0), swapRB=kw.get("swap_rb", False), crop=kw.get("crop", False))
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_synthetic_gray_and_float(rng):
    img = rng.uniform(0, 255, size=(13, 17)).astype(np.float32)
    a = refnet.blob_from_image(img, 0.25, (8, 6), mean=3.0)
    b = cv2.dnn.blobFromImage(img, 0.25, (8, 6), 3.0)
    np.testing.assert_array_equal(a, b)
    # without resize the rule is plain arithmetic: check by hand
    img3 = rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    got = refnet.blob_from_image(img3, 2.0, mean=(1, 2, 3), swap_rb=True)
    want = (img3[:, :, ::-1].astype(np.float32) - np.float32([1, 2, 3])) * 2
    np.testing.assert_array_equal(got[0], want.transpose(2, 0, 1))


def test_bad_images():
    with pytest.raises(ShapeError):
        refnet.blob_from_image(np.zeros((4,)))
    with pytest.raises(ShapeError):
        refnet.blob_from_image(np.zeros((0, 4, 3)))
    with pytest.raises(ShapeError):
        refnet.blob_from_image(np.zeros((4, 4, 3)), size=(0, 5))


@pytest.mark.parametrize("crop", [False, True])
def test_images_of_several_sizes_without_size_take_the_first_ones(images_dir, crop):
    """cv2.dnn.blobFromImages without a size resizes every image to the first one's size (and
    crops with crop=True) instead of refusing images of different sizes."""
    from refnet import dnn

    imgs = [cv2.imread(str(images_dir / n)) for n in ("darknet_horses.jpg", "darknet_dog.jpg", "caffe_cat.jpg")]
    assert len({im.shape for im in imgs}) == 3
    want = cv2.dnn.blobFromImages(imgs, 0.5, (0, 0), (1, 2, 3), True, crop)
    assert want.shape == (3, 3) + imgs[0].shape[:2]
    np.testing.assert_array_equal(refnet.preprocess.blob_from_images(imgs, 0.5, None, (1, 2, 3), True, crop), want)
    np.testing.assert_array_equal(dnn.blobFromImages(imgs, 0.5, (0, 0), (1, 2, 3), True, crop), want)
