#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz_h5 harness (tests/fuzz/corpus/h5/):
byte strings in the file-description format that fuzz_h5 decodes
(tests/fuzz/fuzz_targets.c, h5_dataset / h5_attrs / h5_space), describing
an ncmi features file, a CLAM coords file, a TRIDENT file, a slide
embedding and an empty file. Run from the repository root."""
import json
import struct

C = 'tests/fuzz/corpus/h5'
NAMES = ["patch_size", "patch_level", "downsample", "level_dim", "downsampled_level_dim", "name", "save_path",
         "patch_size_level0", "target_mpp", "target_magnification", "level0_mpp", "level0_magnification",
         "overlap", "level0_width", "level0_height", "tiling", "encoder", "weights_sha256", "precision",
         "input_size", "weights_source", "slide_id", "other"]
DIMS = [0, 1, 2, 3, 5, 17, 64, 300]
T = {'f32': 0, 'f64': 1, 'f16': 2, 'i32': 3, 'i64': 4, 'u8': 5, 'str': 6, 'vstr': 7, 'cmpd': 8, 'f32be': 9,
     'i16': 10}
PACK = {'f32': '<f', 'f64': '<d', 'i32': '<i', 'i64': '<q', 'u8': '<B', 'i16': '<h', 'f32be': '>f', 'cmpd': '<d'}


def space(dims):
    if dims is None:
        return bytes([0])  # scalar
    if dims == 'null':
        return bytes([4])
    return bytes([len(dims)]) + bytes(DIMS.index(d) for d in dims)


def npts(dims):
    if dims is None:
        return 1
    if dims == 'null':
        return 0
    n = 1
    for d in dims:
        n *= d
    return n


def values(t, vals, slen=8):
    if t == 'vstr':
        out = b''
        for v in vals:
            v = v.encode()
            if len(v) <= 200:
                out += bytes([len(v)]) + v
            else:  # a length byte over 200 means 4x that many characters
                L = max((len(v) + 3) // 4, 201)
                out += bytes([L]) + v.ljust(L * 4, b' ')
        return out
    if t == 'str':
        return b''.join(v.encode().ljust(slen, b'\0')[:slen] for v in vals)
    return b''.join(struct.pack(PACK[t], v) for v in vals)


def attr(name, t, dims, vals, slen=8):
    return bytes([NAMES.index(name), slen, T[t]]) + space(dims) + values(t, vals, slen)


def attrs(lst):
    return bytes([len(lst)]) + b''.join(lst)


def dataset(t, dims, fill, vals, at):
    b = bytes([2, T[t]]) + space(dims) + bytes([fill])
    n = npts(dims)
    if 1 <= n <= 4096:
        b += b'\0' if vals is None else b'\1' + values(t, vals)
    return b + attrs(at)


tiling = json.dumps({"preset": "default", "target_mpp": 0.5, "patch_size": 256, "overlap": 0, "seg_mpp": 8.0,
                     "seg_max_side": 4096, "grid": "contour", "contour_check": "four_pt", "min_tissue": 0.25,
                     "seg": {"use_otsu": 0, "sthresh": 8, "mthresh": 7, "close": 4, "a_t": 100.0, "a_h": 16.0,
                             "max_n_holes": 8}}, separators=(',', ':'))
# ncmi features file: features f32 [5,3], coords i64 [5,2], root attributes
feat = dataset('f32', [5, 3], 0, [0.1 * i for i in range(15)], [])
coords = dataset('i64', [5, 2], 0, list(range(10)), [])
root = attrs([attr('encoder', 'vstr', None, ['resnet50_trunc']), attr('patch_size', 'i64', None, [256]),
              attr('target_mpp', 'f64', None, [0.5]), attr('tiling', 'vstr', None, [tiling]),
              attr('precision', 'str', None, ['fp32'], 4)])
open(C + '/ncmi_features.bin', 'wb').write(b'\0' + feat + coords + root)
# coords file: coords i64 [3,2] with CLAM attributes on the dataset, tiling on the root
cat = [attr('patch_size', 'i64', None, [256]), attr('patch_level', 'i64', None, [0]),
       attr('downsample', 'f64', [2], [1.0, 1.0]), attr('level_dim', 'i64', [2], [2400, 1800]),
       attr('name', 'vstr', None, ['slide_a'])]
coords = dataset('i64', [3, 2], 0, [0, 0, 256, 0, 0, 256], cat)
open(C + '/coords_clam.bin', 'wb').write(
    b'\1' + coords + b'\0' + attrs([attr('tiling', 'vstr', None, [tiling]), attr('level0_mpp', 'f32', None, [0.25])]))
# TRIDENT-like: features f16 [1,5,2] (fill value), coords i32 [1,5,2]
feat = bytes([2, T['f16']]) + space([1, 5, 2]) + bytes([1]) + b'\0' + attrs([])
coords = dataset('i32', [1, 5, 2], 0, list(range(10)), [attr('patch_size', 'i32', None, [512])])
open(C + '/trident.bin', 'wb').write(b'\0' + feat + coords + attrs([]))
# a slide embedding [D] f64, and a group named coords; a name attribute of 2 strings
feat = dataset('f64', [17], 1, None, [])
open(C + '/embedding.bin', 'wb').write(b'\0' + feat + bytes([1]) + attrs([attr('name', 'str', [2], ['a', 'b'], 3)]))
# empty: features [0, 64], coords [0, 2]
open(C + '/empty.bin', 'wb').write(b'\0' + dataset('f32', [0, 64], 0, None, []) + dataset('i64', [0, 2], 0, None, []) +
                                   attrs([]))
