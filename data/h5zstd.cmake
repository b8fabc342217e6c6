# data/h5zstd.cmake: the zstd HDF5 filter (id 32015) as a dynamic plugin,
# ${CMAKE_BINARY_DIR}/hdf5-plugins/libh5zstd.so, for HDF5_PLUGIN_PATH users such as h5py.
# It compiles the filter source itself and links only HDF5 and zstd: a plugin must not drag
# the rest of groundc into the process that loads it.
add_library(h5zstd_plugin MODULE ${CMAKE_SOURCE_DIR}/data/h5zstd_plugin.c
                                 ${CMAKE_SOURCE_DIR}/data/h5zstd.c)
target_include_directories(h5zstd_plugin PRIVATE ${CMAKE_SOURCE_DIR} ${HDF5_C_INCLUDE_DIRS})
target_link_libraries(h5zstd_plugin PRIVATE ${HDF5_C_LIBRARIES} PkgConfig::ZSTD)
# Only the two H5PL entry points are exported (H5PLextern.h marks them visible).
set_target_properties(h5zstd_plugin PROPERTIES
  OUTPUT_NAME h5zstd
  PREFIX lib
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/hdf5-plugins
  C_VISIBILITY_PRESET hidden
  POSITION_INDEPENDENT_CODE ON)
# The plugin is loaded into programs built without sanitizers (python3 for h5py): an
# AddressSanitizer-instrumented library would refuse to load there, so the GROUNDC_SANITIZE
# flags that the root CMakeLists.txt adds to every target are taken off this one.
foreach(prop COMPILE_OPTIONS LINK_OPTIONS)
  get_target_property(opts h5zstd_plugin ${prop})
  if(opts)
    list(FILTER opts EXCLUDE REGEX "^-fsanitize|^-fno-sanitize|^-fno-omit-frame-pointer$")
    set_target_properties(h5zstd_plugin PROPERTIES ${prop} "${opts}")
  endif()
endforeach()
