# Turns a `X.bpf.c` into a libbpf skeleton `X.skel.h` at build time.
#
#   bpf_skeleton(<name> <source.bpf.c>)
#
# defines an INTERFACE target `<name>_skel` whose include directory holds `<name>.skel.h`.
# The program reads only UAPI context structs, so it builds from the kernel headers Debian ships
# (<linux/bpf.h>, linux-libc-dev): no vmlinux.h, and no BTF needed on the build machine. The
# object runs on any kernel with the features it uses (SK_REUSEPORT SELECT_OR_MIGRATE, 5.14+;
# bpf_loop, 5.17+).

find_program(BPF_CLANG NAMES clang clang-16 clang-15 clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

set(LBD_BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf_gen)
file(MAKE_DIRECTORY ${LBD_BPF_GEN_DIR})

# <asm/types.h> and friends, which <linux/bpf.h> includes, live in the multiarch directory.
set(LBD_BPF_ASM_INCLUDE /usr/include/${CMAKE_LIBRARY_ARCHITECTURE})

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
            -Wall -Werror -I${source_dir} -I${LBD_BPF_ASM_INCLUDE} -c ${source_abs} -o ${object}
    DEPENDS ${source_abs} ${bpf_headers}
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
