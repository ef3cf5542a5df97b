"""What each emoji is labelled with and which split it goes to: its CLDR keywords and group,
plurals merged into their singular, the vocabulary of the labels most emoji families carry, the
emoji family (every skin-tone, gender, hair and direction variant of one emoji) and the splits,
placed family by family by iterative stratification. Pure Python: no image is touched here.
"""

import collections
import random
import re

# OpenMoji's own emoji (PUA codepoints), its drawings of Unicode characters that are not RGI
# emoji, and the skin-tone / hair components: no Noto counterpart, or not an emoji of their own.
SKIPPED_GROUPS = ("extras-openmoji", "extras-unicode", "component")
SPLITS = (("train", 0.6), ("eval", 0.2), ("test", 0.2))
LARGE_FAMILY_SHARE = 0.01  # a family with more of the images than this goes to train

# Family rule (family_key): codepoints that make a variant of another emoji.
VARIATION_SELECTOR, ZWJ = "FE0F", "200D"
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}
GENDER_SIGNS = {"2640", "2642"}
HAIR = {"1F9B0", "1F9B1", "1F9B2", "1F9B3"}  # red, curly, bald, white
DIRECTION = "27A1"  # "...: facing right" (Emoji 15.1)
# man / woman / person, boy / girl / child, old man / old woman / older person
PERSON = {"1F468": "1F9D1", "1F469": "1F9D1", "1F9D1": "1F9D1",
          "1F466": "1F9D2", "1F467": "1F9D2", "1F9D2": "1F9D2",
          "1F474": "1F9D3", "1F475": "1F9D3", "1F9D3": "1F9D3"}
# gendered emoji that are separate codepoints, after the mapping above (keys joined by "-")
GENDER_ALIASES = {
    "1F478": "1F934", "1FAC5": "1F934",  # princess, person with crown -> prince
    "1F483": "1F57A",  # woman dancing -> man dancing
    "1F936": "1F385", "1F9D1-1F384": "1F385",  # Mrs. Claus, Mx Claus -> Santa Claus
    "1FAC3": "1F930", "1FAC4": "1F930",  # pregnant man / person -> pregnant woman
    "1F46C": "1F46B", "1F46D": "1F46B", "1F9D1-1F91D-1F9D1": "1F46B",  # holding hands
    "1F9D1-2764-1F48B-1F9D1": "1F48F",  # kiss: X, Y -> kiss
    "1F9D1-2764-1F9D1": "1F491",  # couple with heart: X, Y -> couple with heart
    # skin-tone combinations written as other sequences than their base emoji
    "1FAF1-1FAF2": "1F91D",  # rightwards + leftwards hand -> handshake
    "1F9D1-1F430-1F9D1": "1F46F",  # X, bunny, Y -> people with bunny ears
    "1F9D1-1FAEF-1F9D1": "1F93C",  # X, fight cloud, Y -> people wrestling
}
FAMILY = "1F46A"  # every family: X, Y, ... sequence (only adults / children) -> family

# Merge rule (singular): irregular plurals, and words that look plural but are not.
IRREGULAR_PLURALS = {"men": "man", "women": "woman", "children": "child", "people": "person",
                     "feet": "foot", "teeth": "tooth", "mice": "mouse", "geese": "goose"}
NOT_PLURALS = {"news", "glasses", "shades"}


def has_letter(word):
  return re.search(r"[^\W\d_]", word) is not None


def keywords(entry, by_hexcode):
  """The CLDR keywords of an OpenMoji entry, lowercased, without those that have no letter. A
  skin-tone variant has no tags of its own: it takes those of its base emoji."""
  tags = entry["tags"]
  if not tags.strip() and entry["skintone_base_hexcode"]:
    tags = by_hexcode[entry["skintone_base_hexcode"]]["tags"]
  words = (word.strip().lower() for word in tags.split(","))
  return [word for word in words if word and has_letter(word)]


def singular(word, known):
  """The merge rule: a plural becomes its singular when that singular is also a label (among
  all keywords and groups, `known`). Irregular plurals from a short table; otherwise "-ies" ->
  "-y", "-es" -> "" after s, x, z, ch or sh, and "-s" -> "", tried in that order; words shorter
  than 4 letters, words in "ss" and a few false plurals (NOT_PLURALS) are left alone. So
  faces -> face, flags -> flag, kisses -> kiss, berries -> berry, men -> man; news stays."""
  if word in IRREGULAR_PLURALS:
    candidates = [IRREGULAR_PLURALS[word]]
  elif word in NOT_PLURALS or len(word) < 4 or word.endswith("ss"):
    return word
  else:
    candidates = []
    if word.endswith("ies"):
      candidates.append(word[:-3] + "y")
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
      candidates.append(word[:-2])
    if word.endswith("s"):
      candidates.append(word[:-1])
  for candidate in candidates:
    if candidate in known:
      return candidate
  return word


def family_key(hexcode):
  """The emoji family of a base hexcode: variation selectors and ZWJs dropped; in a sequence,
  skin tones, gender signs, hair components and a trailing "facing right" arrow dropped;
  man / woman / person (and boy / girl / child, old man / old woman / older person) made one;
  then gendered codepoints aliased (GENDER_ALIASES) and every family sequence made "family"."""
  codepoints = [c for c in hexcode.upper().split("-") if c not in (VARIATION_SELECTOR, ZWJ)]
  if len(codepoints) > 1:
    codepoints = [c for c in codepoints if c not in SKIN_TONES | GENDER_SIGNS | HAIR]
    if len(codepoints) > 1 and codepoints[-1] == DIRECTION:
      codepoints = codepoints[:-1]
  codepoints = [PERSON.get(c, c) for c in codepoints]
  key = "-".join(codepoints)
  if len(codepoints) > 1 and all(c in ("1F9D1", "1F9D2") for c in codepoints):
    return FAMILY
  return GENDER_ALIASES.get(key, key)


def label_name(label):
  return re.sub(r"\s+", "_", label)


def build_labels(entries, by_hexcode, num_labels):
  """Per entry its merged labels, the vocabulary (most families first) and the merges."""
  raw = [keywords(e, by_hexcode) + [e["group"]] for e in entries]
  known = {word for words in raw for word in words}
  merged_into = collections.defaultdict(set)
  per_entry = []
  for words in raw:
    labels = set()
    for word in words:
      label = singular(word, known)
      if label != word:
        merged_into[label].add(word)
      labels.add(label)
    per_entry.append(labels)
  families, images = collections.defaultdict(set), collections.Counter()
  for entry, labels in zip(entries, per_entry):
    for label in labels:
      families[label].add(entry["family"])
      images[label] += 1
  ranked = sorted(families, key=lambda label: (-len(families[label]), -images[label], label))
  vocabulary = ranked[:num_labels]
  return per_entry, vocabulary, {label: len(families[label]) for label in vocabulary}, merged_into


def assign_splits(entries, rows, seed):
  """{family: split}. Families of more than LARGE_FAMILY_SHARE of the images go to train (the
  skin-tone combinations of kiss, couple with heart, holding hands...: in eval or test one of them
  would make most of a label's positives there). Then iterative stratification over the other
  families (Sechidis et al., 2011): while families are left, take the label with the fewest
  unplaced positive images and place each of its families (most of its images first, then in
  seeded-shuffle order) into the split that most lacks that label's images (ties: the split
  that most lacks images, then train, eval, test); families without a label go last, to the
  split that most lacks images."""
  fractions = [fraction for _, fraction in SPLITS]
  members = collections.defaultdict(list)
  for index, entry in enumerate(entries):
    members[entry["family"]].append(index)
  order = sorted(members)
  random.Random(seed).shuffle(order)
  num_labels = len(rows[0]) if rows else 0
  counts = {f: [0] * num_labels for f in order}  # positive images per label in each family
  for f in order:
    for index in members[f]:
      for j, value in enumerate(rows[index]):
        counts[f][j] += value
  total_images = len(entries)
  want_images = [fraction * total_images for fraction in fractions]
  totals = [sum(counts[f][j] for f in order) for j in range(num_labels)]
  want_labels = [[fraction * totals[j] for j in range(num_labels)] for fraction in fractions]
  remaining = list(totals)
  placed = {}

  def place(f, split):
    placed[f] = split
    want_images[split] -= len(members[f])
    for j, count in enumerate(counts[f]):
      want_labels[split][j] -= count
      remaining[j] -= count

  for f in sorted(order):
    if len(members[f]) > LARGE_FAMILY_SHARE * total_images:
      place(f, 0)
  while True:
    open_labels = [j for j in range(num_labels) if remaining[j] > 0]
    if not open_labels:
      break
    j = min(open_labels, key=lambda j: (remaining[j], j))
    carriers = [f for f in order if f not in placed and counts[f][j] > 0]
    for f in sorted(carriers, key=lambda f: -counts[f][j]):  # stable: seeded order in ties
      split = max(range(len(SPLITS)), key=lambda s: (want_labels[s][j], want_images[s], -s))
      place(f, split)
  for f in order:
    if f not in placed:
      place(f, max(range(len(SPLITS)), key=lambda s: (want_images[s], -s)))
  return {f: SPLITS[s][0] for f, s in placed.items()}
