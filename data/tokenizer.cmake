# data/tokenizer.cmake: generates the C reader of SentencePiece model files
# (data/sentencepiece_model.proto) with protoc-c at build time, into the build folder, and
# compiles it into groundc_data for data/tokenizer.c. The generated files are never committed.
set(DS_SPM_PROTO ${CMAKE_SOURCE_DIR}/data/sentencepiece_model.proto)
set(DS_SPM_GEN_DIR ${CMAKE_BINARY_DIR}/data/generated)
set(DS_SPM_GEN_C ${DS_SPM_GEN_DIR}/sentencepiece_model.pb-c.c)
set(DS_SPM_GEN_H ${DS_SPM_GEN_DIR}/sentencepiece_model.pb-c.h)
file(MAKE_DIRECTORY ${DS_SPM_GEN_DIR})
add_custom_command(
  OUTPUT ${DS_SPM_GEN_C} ${DS_SPM_GEN_H}
  COMMAND ${PROTOC_C} --c_out=${DS_SPM_GEN_DIR} --proto_path=${CMAKE_SOURCE_DIR}/data
          ${DS_SPM_PROTO}
  DEPENDS ${DS_SPM_PROTO}
  COMMENT "protoc-c: generating the SentencePiece model reader"
  VERBATIM)
target_sources(groundc_data PRIVATE ${DS_SPM_GEN_C} ${DS_SPM_GEN_H})
# Only tokenizer.c includes the generated header; its users see data/tokenizer.h alone.
target_include_directories(groundc_data PRIVATE ${DS_SPM_GEN_DIR})
