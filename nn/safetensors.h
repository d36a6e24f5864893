/* safetensors read/write (https://github.com/huggingface/safetensors format):
 * 8-byte little-endian header length, a JSON header (parsed with jansson)
 * mapping names to {dtype, shape, data_offsets} plus optional
 * "__metadata__" (string -> string), then the raw little-endian data.
 * Dtypes: F32, F16, BF16, F64, I64 (and I32 on read). Reading converts to
 * float32 (I64/I32/F64 -> float); nn_st_read_f64 reads F64 (or F32) exactly.
 * Every problem is reported with the file's path. */
#ifndef NCMI_SAFETENSORS_H
#define NCMI_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define NN_ST_MAX_DIMS 8

typedef enum nn_st_dtype { NN_ST_F32 = 0, NN_ST_F16, NN_ST_BF16, NN_ST_I64, NN_ST_I32, NN_ST_F64 } nn_st_dtype;

typedef struct nn_st_entry {
    char *name;
    nn_st_dtype dtype;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    size_t numel;
    size_t offset, nbytes; /* within the data section */
} nn_st_entry;

typedef struct nn_safetensors {
    char *path;
    nn_st_entry *entries;
    int n;
    char **meta_keys, **meta_vals;
    int n_meta;
    uint8_t *data;  /* the data section (whole file read) */
    size_t data_len;
    void *buf_;     /* private */
} nn_safetensors;

/* Open and validate: header size within the file, valid JSON, known dtypes,
 * shapes consistent with byte ranges, ranges inside the data section and not
 * overlapping. -1 with "<path>: <problem>" on error (st left empty). */
int nn_st_open(nn_safetensors *st, const char *path);
void nn_st_close(nn_safetensors *st);
const nn_st_entry *nn_st_find(const nn_safetensors *st, const char *name);
const char *nn_st_meta(const nn_safetensors *st, const char *key); /* NULL if absent */
/* Read tensor `name` as float32 into out (numel floats). When ndim >= 0 the
 * stored shape must equal shape[0..ndim) ("<path>: tensor 'x': shape
 * [3,4] in file, [4,3] expected"); ndim < 0 only checks numel. */
int nn_st_read_f32(const nn_safetensors *st, const char *name, float *out, size_t numel,
                   int ndim, const int *shape);
/* 0 when entry e has exactly shape[0..ndim), else -1 with
 * "<path>: tensor 'x': shape [3,4] in file, [4,3] expected". */
int nn_st_check_shape(const nn_safetensors *st, const nn_st_entry *e, int ndim, const int *shape);
/* Read an F64 tensor (or an F32 one, widened) as double, exactly; shape as
 * nn_st_read_f32. */
int nn_st_read_f64(const nn_safetensors *st, const char *name, double *out, size_t numel, int ndim,
                   const int *shape);
/* Read an I64 tensor as int64 (also accepts I32). */
int nn_st_read_i64(const nn_safetensors *st, const char *name, int64_t *out, size_t numel);

/* One tensor to write: F32/F16/BF16 take float data (converted, round to
 * nearest even); F64 takes double data; I64 takes int64_t data. */
typedef struct nn_st_tensor {
    const char *name;
    nn_st_dtype dtype;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    const void *data;
} nn_st_tensor;

/* Write atomically (path.tmp.<pid> then rename). Tensors are laid out in
 * the order given, 8-byte aligned header. */
int nn_st_write(const char *path, const nn_st_tensor *ts, int n, const char *const *meta_keys,
                const char *const *meta_vals, int n_meta);

/* dtype helpers */
const char *nn_st_dtype_name(nn_st_dtype d);
size_t nn_st_dtype_size(nn_st_dtype d);
uint16_t nn_f32_to_f16(float f);
float nn_f16_to_f32(uint16_t h);
uint16_t nn_f32_to_bf16(float f);
float nn_bf16_to_f32(uint16_t h);

#endif
