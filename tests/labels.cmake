# Labels and extra properties of particular tests (see tests/CMakeLists.txt).
# counts heap allocations made by groundc's own (static) libraries
target_link_options(test_no_malloc PRIVATE -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc)
# test_shard runs h5py against the zstd HDF5 plugin (data/h5zstd.cmake): build it first
add_dependencies(test_shard h5zstd_plugin)
# test_pack runs the groundc command (synth, pack): build it first
add_dependencies(test_pack groundc)
# test_cuda_parity compares every op on CUDA with the CPU: it needs a GPU (exit 77 without)
set_tests_properties(test_cuda_parity PROPERTIES LABELS gpu)
# training on the GPU against the CPU (skips without a visible CUDA device)
set_tests_properties(test_device_gpu PROPERTIES LABELS gpu)
# end-to-end runs of the groundc command that take 10 s or more each on 2 cores (`ctest -LE slow`
# leaves them out for a quick loop; scripts/test.sh runs them in both passes)
set_tests_properties(test_train test_train_data_checks test_generate test_finetune_lora
                     test_export_gguf test_export_hf test_cli PROPERTIES LABELS slow)
