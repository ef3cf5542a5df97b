"""Decompression bombs for the tests (not collected): images whose headers say 20000 x 20000
pixels, made without ever holding their pixels, since that is what they are to test."""

import io
import struct
import zlib

from PIL import Image

BOMB_SIDE = 20000  # 400 M pixels: 1.2 GB as RGB; TensorFlow's decode and resize peaked at 13 GB


def png_bomb(path, side=BOMB_SIDE):
  """A grey side x side PNG of one colour, its rows compressed one at a time: 388 KB on disk,
  and never more than a row in memory here."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  compressor = zlib.compressobj(9)
  row = b"\x00" * (side + 1)  # filter byte 0, then side black pixels
  pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
  header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def jpeg_bomb(path, side=BOMB_SIDE):
  """A 16 x 16 JPEG whose frame header says side x side: what a decoder allocates goes by it."""
  buffer = io.BytesIO()
  Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
  data = bytearray(buffer.getvalue())
  frame = data.index(b"\xff\xc0")  # SOF0: length, precision, then height and width
  data[frame + 5:frame + 9] = struct.pack(">HH", side, side)
  with open(path, "wb") as f:
    f.write(data)
