// C++ allocation through libtessera.so: every operator new/delete form a compiler emits
// (plain, array, sized, aligned, nothrow), the standard containers, and out-of-memory
// behaviour (new_handler, std::bad_alloc, nothrow null). Prints "cxx: OK" or exits 1.
//
//   cxx [--expect-tessera]
#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

static int failures;

#define CHECK(cond, what)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            std::fprintf(stderr, "FAILED %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, what); \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static bool aligned_to(const void *p, std::size_t a) {
    return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0;
}

struct alignas(64) Line {
    unsigned char bytes[64];
};

struct alignas(4096) Page {
    unsigned char bytes[4096];
};

struct Counted {
    static std::atomic<int> live;
    std::uint64_t value;
    explicit Counted(std::uint64_t v = 7) : value(v) { live++; }
    ~Counted() { live--; }
};
std::atomic<int> Counted::live{0};

// The mangled names must resolve into libtessera.so when preloaded.
static void check_identity(bool expect) {
    static const char *const names[] = {
        "_Znwm", "_Znam", "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm",
        "_ZnwmSt11align_val_t", "_ZdlPvSt11align_val_t", "_ZdlPvmSt11align_val_t",
        "_ZnwmRKSt9nothrow_t", "_ZdlPvRKSt9nothrow_t",
    };
    int ours = 0;
    for (const char *name : names) {
        void *sym = dlsym(RTLD_DEFAULT, name);
        Dl_info info;
        const char *file = sym && dladdr(sym, &info) && info.dli_fname ? info.dli_fname : "?";
        bool in = std::strstr(file, "libtessera") != nullptr;
        ours += in;
        if (expect) CHECK(in, name);
    }
    std::printf("identity: %d of %zu operator symbols in libtessera.so\n", ours,
                sizeof names / sizeof *names);
}

static void check_operators() {
    // Volatile sizes keep the compiler from eliding or folding the allocations.
    volatile std::size_t n = 1000;
    int *one = new int(42);
    CHECK(*one == 42, "new int");
    delete one;
    int *many = new int[n];
    for (std::size_t i = 0; i < n; i++) many[i] = int(i);
    CHECK(many[999] == 999, "new int[]");
    delete[] many;

    Counted *objs = new Counted[n];  // an array cookie: sized delete[] gets size + 8
    CHECK(Counted::live == 1000, "new Counted[]");
    delete[] objs;
    CHECK(Counted::live == 0, "delete[] Counted");

    // Sized delete called explicitly with the size given to new.
    for (std::size_t size = 1; size < 70000; size = size * 3 / 2 + 1) {
        void *p = ::operator new(size);
        std::memset(p, 0x5a, size);
        CHECK(aligned_to(p, size <= 8 ? 8 : 16), "operator new alignment");
        ::operator delete(p, size);
        void *a = ::operator new[](size);
        std::memset(a, 0x5b, size);
        ::operator delete[](a, size);
    }

    // Aligned new: over-aligned types and explicit align_val_t, every power of two to 1 MiB.
    Line *line = new Line;
    CHECK(aligned_to(line, 64), "new alignas(64)");
    std::memset(line, 1, sizeof *line);
    delete line;
    Line *lines = new Line[17];
    CHECK(aligned_to(lines, 64), "new alignas(64)[]");
    delete[] lines;
    Page *page = new Page;
    CHECK(aligned_to(page, 4096), "new alignas(4096)");
    delete page;
    for (std::size_t align = 1; align <= (1u << 20); align *= 2) {
        std::size_t size = align * 3 + 1;
        void *p = ::operator new(size, std::align_val_t(align));
        CHECK(aligned_to(p, align), "operator new(size, align)");
        std::memset(p, 2, size);
        ::operator delete(p, size, std::align_val_t(align));
        p = ::operator new[](size, std::align_val_t(align));
        CHECK(aligned_to(p, align), "operator new[](size, align)");
        ::operator delete[](p, std::align_val_t(align));
        p = ::operator new(size, std::align_val_t(align), std::nothrow);
        CHECK(p && aligned_to(p, align), "operator new(size, align, nothrow)");
        ::operator delete(p, std::align_val_t(align), std::nothrow);
        p = ::operator new[](size, std::align_val_t(align), std::nothrow);
        CHECK(p && aligned_to(p, align), "operator new[](size, align, nothrow)");
        ::operator delete[](p, size, std::align_val_t(align));
    }

    // nothrow forms.
    int *q = new (std::nothrow) int(5);
    CHECK(q && *q == 5, "new(nothrow)");
    ::operator delete(q, std::nothrow);
    char *c = new (std::nothrow) char[n];
    CHECK(c, "new(nothrow)[]");
    ::operator delete[](c, std::nothrow);
    delete static_cast<int *>(nullptr);
    ::operator delete(nullptr, std::size_t(16));
    ::operator delete[](nullptr, std::size_t(16));
    std::printf("operators: done\n");
}

static void check_containers() {
    std::vector<std::string> words;
    for (int i = 0; i < 200000; i++) words.push_back("word-" + std::to_string(i * 7919 % 100003));
    std::map<std::string, int> counts;
    for (const auto &w : words) counts[w]++;
    std::unordered_map<int, std::vector<int>> buckets;
    for (int i = 0; i < 100000; i++) buckets[i % 1009].push_back(i);
    std::uint64_t sum = 0;
    for (const auto &kv : counts) sum += kv.first.size() * kv.second;
    for (const auto &kv : buckets) sum += kv.second.size();
    std::string big;
    for (int i = 0; i < 100000; i++) big += "abcdefghij";
    CHECK(big.size() == 1000000, "string growth");
    CHECK(counts.size() == 100003, "map size");
    std::vector<std::unique_ptr<Counted>> owned;
    for (int i = 0; i < 10000; i++) owned.emplace_back(new Counted(i));
    owned.clear();
    CHECK(Counted::live == 0, "unique_ptr cleanup");
    // Containers built on one thread and destroyed on others.
    std::vector<std::thread> threads;
    std::vector<std::map<int, std::string>> maps(4);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 20000; i++) maps[t][i] = std::to_string(i * t);
    for (int t = 0; t < 4; t++)
        threads.emplace_back([&maps, t] {
            std::map<int, std::string> mine = std::move(maps[t]);
            for (int i = 0; i < 20000; i += 3) mine.erase(i);
            mine.clear();
        });
    for (auto &th : threads) th.join();
    std::printf("containers: checksum %llu\n", static_cast<unsigned long long>(sum));
}

static int handler_calls;
static void handler() {
    handler_calls++;
    std::set_new_handler(nullptr);  // next failure: std::bad_alloc
}

static void check_out_of_memory() {
    volatile std::size_t huge = std::size_t(1) << 62;
    bool caught = false;
    try {
        void *p = ::operator new(huge);
        ::operator delete(p);
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    CHECK(caught, "operator new(2^62) throws std::bad_alloc");

    caught = false;
    std::set_new_handler(handler);
    try {
        char *p = new char[huge];
        delete[] p;
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    CHECK(caught && handler_calls == 1, "new_handler called, then std::bad_alloc");

    caught = false;
    try {
        void *p = ::operator new(huge, std::align_val_t(64));
        ::operator delete(p, std::align_val_t(64));
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    CHECK(caught, "aligned operator new(2^62) throws std::bad_alloc");

    CHECK(::operator new(huge, std::nothrow) == nullptr, "nothrow new(2^62) is null");
    CHECK(::operator new[](huge, std::align_val_t(64), std::nothrow) == nullptr,
          "aligned nothrow new[](2^62) is null");
    std::printf("out of memory: done\n");
}

int main(int argc, char **argv) {
    bool expect = argc > 1 && std::strcmp(argv[1], "--expect-tessera") == 0;
    check_identity(expect);
    check_operators();
    check_containers();
    check_out_of_memory();
    if (failures) {
        std::printf("cxx: %d FAILURES\n", failures);
        return 1;
    }
    std::printf("cxx: OK\n");
    return 0;
}
