# Finds onnxruntime's C/C++ API headers, in this order: ORT_INCLUDE_DIR given by the user
# (cache variable or environment), headers installed on the system, Debian trixie's
# libonnxruntime-dev fetched with apt-get download (never installed), onnxruntime's release
# archive. Nothing is linked: the library takes the API from RegisterCustomOps at load time.
if(NOT ORT_INCLUDE_DIR AND DEFINED ENV{ORT_INCLUDE_DIR})
  set(ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}")
endif()
if(NOT ORT_INCLUDE_DIR)
  find_path(ORT_SYSTEM_INCLUDE onnxruntime_cxx_api.h
    PATH_SUFFIXES onnxruntime onnxruntime/core/session
    PATHS /usr/include /usr/local/include)
  if(ORT_SYSTEM_INCLUDE)
    set(ORT_INCLUDE_DIR "${ORT_SYSTEM_INCLUDE}")
  endif()
endif()
if(NOT ORT_INCLUDE_DIR)
  execute_process(
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/fetch_ort_headers.sh ${CMAKE_BINARY_DIR}/ort_headers
    OUTPUT_VARIABLE ORT_FETCHED OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE ORT_FETCH_RESULT)
  if(NOT ORT_FETCH_RESULT EQUAL 0)
    message(FATAL_ERROR "onnxruntime headers not found: set ORT_INCLUDE_DIR to a folder with onnxruntime_cxx_api.h")
  endif()
  set(ORT_INCLUDE_DIR "${ORT_FETCHED}")
endif()
if(NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_cxx_api.h")
  message(FATAL_ERROR "ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR} has no onnxruntime_cxx_api.h")
endif()
message(STATUS "onnxruntime headers: ${ORT_INCLUDE_DIR}")
