# Turns a `X.bpf.c` into a libbpf skeleton `X.skel.h` at build time.
#
#   bpf_skeleton(<name> <source.bpf.c>)
#
# defines an INTERFACE target `<name>_skel` whose include directory holds `<name>.skel.h`.
# `vmlinux.h` is generated once from the running kernel's BTF (/sys/kernel/btf/vmlinux); it is a
# build product and never committed.

find_program(BPF_CLANG NAMES clang clang-16 clang-15 clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

set(LBD_BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf_gen)
file(MAKE_DIRECTORY ${LBD_BPF_GEN_DIR})

set(LBD_KERNEL_BTF /sys/kernel/btf/vmlinux)
if(NOT EXISTS ${LBD_KERNEL_BTF})
  message(FATAL_ERROR "lbd needs a kernel with BTF (${LBD_KERNEL_BTF} is missing)")
endif()

add_custom_command(
  OUTPUT ${LBD_BPF_GEN_DIR}/vmlinux.h
  COMMAND ${BPFTOOL} btf dump file ${LBD_KERNEL_BTF} format c > ${LBD_BPF_GEN_DIR}/vmlinux.h
  COMMENT "Generating vmlinux.h from the running kernel's BTF"
  VERBATIM)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(LBD_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(LBD_BPF_ARCH arm64)
else()
  set(LBD_BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

function(bpf_skeleton name source)
  get_filename_component(source_abs ${source} ABSOLUTE)
  get_filename_component(source_dir ${source_abs} DIRECTORY)
  set(object ${LBD_BPF_GEN_DIR}/${name}.bpf.o)
  set(skeleton ${LBD_BPF_GEN_DIR}/${name}.skel.h)
  file(GLOB bpf_headers ${source_dir}/*.h)

  # -mcpu=v3: atomic fetch-and-add (used for counters and the round-robin cursor) needs it.
  add_custom_command(
    OUTPUT ${object}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_${LBD_BPF_ARCH}
            -Wall -Werror -I${LBD_BPF_GEN_DIR} -I${source_dir} -c ${source_abs} -o ${object}
    DEPENDS ${source_abs} ${bpf_headers} ${LBD_BPF_GEN_DIR}/vmlinux.h
    COMMENT "Compiling BPF program ${name}"
    VERBATIM)

  add_custom_command(
    OUTPUT ${skeleton}
    COMMAND ${BPFTOOL} gen skeleton ${object} name ${name} > ${skeleton}
    DEPENDS ${object}
    COMMENT "Generating libbpf skeleton ${name}.skel.h"
    VERBATIM)

  add_custom_target(${name}_skel_gen DEPENDS ${skeleton})
  add_library(${name}_skel INTERFACE)
  target_include_directories(${name}_skel INTERFACE ${LBD_BPF_GEN_DIR})
  add_dependencies(${name}_skel ${name}_skel_gen)
endfunction()
