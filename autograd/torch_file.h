// torch_file.h: reads PyTorch checkpoints (torch.save since torch 1.6: a zip archive holding
// data.pkl, a pickle of the state dict, and one stored member per tensor storage) into the
// structure of safetensors.h, so that weights shipped as .pth / .bin (LAVIS's eva_vit_g.pth,
// ImageBind's imagebind_huge.pth, HF's pytorch_model*.bin) load like safetensors files.
//
// The zip is read with minizip; the pickle by a small unpickler that knows the opcodes of
// protocols 2 to 5 and builds nothing but containers, strings, numbers and tensors
// (torch._utils._rebuild_tensor_v2 / _rebuild_parameter / _rebuild_from_type_v2 over typed
// storages); any other object is kept as an opaque value, never executed. The tensors are
// the string-keyed tensor values of the top-level dict, or of its "state_dict", "model" or
// "module" entry when the top level holds none (training and DeepSpeed checkpoints).
// Contiguous tensors point into the mapped file; others (views with strides) are gathered into
// copies the file owns.
// Every defect (not a zip, a legacy pre-1.6 file, a compressed member, a storage shorter than
// a tensor's extent, a malformed pickle) is a one-line error naming the file, and the tensor
// where one applies.
#pragma once
#include "safetensors.h"

// True when path starts like a zip archive (what torch.save writes).
bool ag_pt_is_torch_file(const char *path);
// Opens and validates; ag_st_close releases it.
ag_st_file *ag_pt_open(const char *path);
