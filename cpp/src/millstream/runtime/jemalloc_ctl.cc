#include "runtime/jemalloc_ctl.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <arrow/memory_pool.h>

#if defined(__linux__)
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace millstream {

namespace {

using MallctlFn = int (*)(const char*, void*, size_t*, void*, size_t);

#if defined(__linux__) && defined(__LP64__)
/// The exported function whose address checks the symbol table read is the loaded one's.
constexpr const char* kAnchor = "_ZN5arrow21jemalloc_set_decay_msEi";
constexpr const char* kMallctl = "je_arrow_mallctl";

struct LoadedObject {
  std::string path;
  uintptr_t base = 0;
};

/// The loaded libarrow: its file and load address.
LoadedObject FindLibArrow() {
  LoadedObject found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        const char* name = info->dlpi_name;
        if (name == nullptr || std::strstr(name, "/libarrow.so") == nullptr) return 0;
        auto* out = static_cast<LoadedObject*>(data);
        out->path = name;
        out->base = info->dlpi_addr;
        return 1;
      },
      &found);
  return found;
}

/// The values (addresses relative to the load address) of the functions `a` and `b` in
/// the ELF file's full symbol table (.symtab), 0 when absent.
void ReadSymbols(const std::string& path, const char* a, uintptr_t* a_value, const char* b,
                 uintptr_t* b_value) {
  *a_value = *b_value = 0;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    close(fd);
    return;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return;
  const auto* bytes = static_cast<const uint8_t*>(map);
  const auto* header = reinterpret_cast<const Elf64_Ehdr*>(bytes);
  const bool elf64 = std::memcmp(header->e_ident, ELFMAG, SELFMAG) == 0 &&
                     header->e_ident[EI_CLASS] == ELFCLASS64 &&
                     header->e_shentsize == sizeof(Elf64_Shdr) &&
                     header->e_shoff + header->e_shnum * sizeof(Elf64_Shdr) <= size;
  if (elf64) {
    const auto* sections = reinterpret_cast<const Elf64_Shdr*>(bytes + header->e_shoff);
    for (int i = 0; i < header->e_shnum; ++i) {
      const Elf64_Shdr& table = sections[i];
      if (table.sh_type != SHT_SYMTAB || table.sh_link >= header->e_shnum) continue;
      const Elf64_Shdr& names = sections[table.sh_link];
      if (table.sh_offset + table.sh_size > size || names.sh_offset + names.sh_size > size) continue;
      const auto* symbols = reinterpret_cast<const Elf64_Sym*>(bytes + table.sh_offset);
      const char* strings = reinterpret_cast<const char*>(bytes + names.sh_offset);
      for (size_t k = 0; k < table.sh_size / sizeof(Elf64_Sym); ++k) {
        const Elf64_Sym& sym = symbols[k];
        if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_value == 0 || sym.st_name >= names.sh_size) {
          continue;
        }
        const char* name = strings + sym.st_name;
        if (std::strcmp(name, a) == 0) *a_value = sym.st_value;
        if (std::strcmp(name, b) == 0) *b_value = sym.st_value;
      }
    }
  }
  munmap(map, size);
}

MallctlFn FindMallctl() {
  LoadedObject lib = FindLibArrow();
  if (lib.path.empty()) return nullptr;
  uintptr_t anchor = 0, mallctl = 0;
  ReadSymbols(lib.path, kAnchor, &anchor, kMallctl, &mallctl);
  if (anchor == 0 || mallctl == 0) return nullptr;
  // The file read must be the copy loaded: its exported function is where it says.
  void* handle = dlopen(lib.path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return nullptr;
  void* exported = dlsym(handle, kAnchor);
  dlclose(handle);
  if (exported == nullptr || reinterpret_cast<uintptr_t>(exported) != lib.base + anchor) return nullptr;
  return reinterpret_cast<MallctlFn>(lib.base + mallctl);
}
#else
MallctlFn FindMallctl() { return nullptr; }
#endif

MallctlFn Mallctl() {
  static const MallctlFn fn = [] {
    // Only where the engine's pool can be jemalloc at all.
    arrow::MemoryPool* pool = nullptr;
    if (!arrow::jemalloc_memory_pool(&pool).ok() || pool == nullptr) return MallctlFn{nullptr};
    return FindMallctl();
  }();
  return fn;
}

}  // namespace

bool JemallocControl::Available() { return Mallctl() != nullptr; }

bool JemallocControl::PurgeAll() {
  MallctlFn mallctl = Mallctl();
  // 4096 is MALLCTL_ARENAS_ALL: every arena.
  return mallctl != nullptr && mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0) == 0;
}

}  // namespace millstream
