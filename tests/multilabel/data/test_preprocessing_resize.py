"""The training resize follows the target as inference's does (issue 23): 255/224 of the
target when not given, so that a crop is most of the image at any size; exactly the original's
255 at 224; a side given explicitly wins."""

import configs
from multilabel.data import preprocessing


def test_the_train_resize_follows_the_target_unless_given():
  assert preprocessing.train_resize(configs.ModelConfig()) == (255, 255)  # the original's
  assert preprocessing.train_resize(configs.ModelConfig(target_height=64,
                                                        target_width=96)) == (73, 109)
  given = configs.ModelConfig(target_height=64, target_width=64, resize_height=100)
  assert preprocessing.train_resize(given) == (100, 73)


def test_a_64_px_crop_is_most_of_the_image_by_default():
  """At 64 px the default crop keeps 64/73 of each side, where a fixed 255 kept a quarter."""
  height, width = preprocessing.train_resize(configs.ModelConfig(target_height=64,
                                                                 target_width=64))
  assert 64 / height > 0.85 and 64 / width > 0.85
