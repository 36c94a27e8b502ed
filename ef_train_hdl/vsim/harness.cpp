// The accelerator's generated Verilog under Verilator, with a C++ DRAM and host: a shared
// library that ef_train_hdl/vsim/__init__.py loads with ctypes.
//
// Each clock cycle: the test bench drives its side of the AXI4 port (the DRAM: ready, read
// data, write responses) and of the AXI4-Lite port (the host), the model settles, the
// handshakes of this cycle are taken (valid and ready both high before the edge), then the
// rising edge. The DRAM answers read bursts in order after `read_latency` cycles, one beat a
// cycle, less with `gap` (the probability of an idle cycle before a beat); writes are taken
// when their address has come and answered `write_latency` cycles after the last beat. Ready
// signals are low with probability `stall`. Every burst is checked against the AXI4 rules the
// accelerator must keep (INCR, full-width beats, aligned, within 4 KiB, at most
// max_burst_beats, wlast on the last beat only); the first violation is kept as a message.
//
// Compiled with -DDATA_BITS=<dma_data_width> -DADDR_BITS=<addr_width> -DMAX_BURST=<beats>.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

#ifndef DATA_BITS
#error "DATA_BITS must be defined"
#endif
static const int DATA_WORDS = DATA_BITS / 32;
static const int BEAT_BYTES = DATA_BITS / 8;

// -- wide-signal access --------------------------------------------------------------------
static inline void put(CData& s, const uint32_t* w) { s = (CData)w[0]; }
static inline void put(SData& s, const uint32_t* w) { s = (SData)w[0]; }
static inline void put(IData& s, const uint32_t* w) { s = w[0]; }
static inline void put(QData& s, const uint32_t* w) { s = (QData)w[0] | ((QData)w[1] << 32); }
template <std::size_t N> static inline void put(VlWide<N>& s, const uint32_t* w) {
    for (std::size_t i = 0; i < N; i++) s[i] = w[i];
}
static inline void get(const CData& s, uint32_t* w) { w[0] = s; }
static inline void get(const SData& s, uint32_t* w) { w[0] = s; }
static inline void get(const IData& s, uint32_t* w) { w[0] = s; }
static inline void get(const QData& s, uint32_t* w) { w[0] = (uint32_t)s; w[1] = (uint32_t)(s >> 32); }
template <std::size_t N> static inline void get(const VlWide<N>& s, uint32_t* w) {
    for (std::size_t i = 0; i < N; i++) w[i] = s[i];
}

struct ReadBurst { uint64_t addr; uint32_t beats, beat; uint64_t ready_at; };
struct WriteBurst { uint64_t addr; uint32_t beats, beat; };
struct Resp { uint64_t ready_at; uint8_t resp; };

struct Sim {
    VerilatedContext* ctx;
    Vtop* top;
    std::vector<uint32_t> mem;
    uint64_t cycles = 0;
    uint32_t read_latency, write_latency;
    double gap, stall;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    std::deque<ReadBurst> reads;
    std::deque<WriteBurst> writes;
    std::deque<Resp> resps;
    std::string error;
    // the host's current AXI4-Lite transaction
    bool aw_pending = false, w_pending = false, b_wait = false;
    bool ar_pending = false, r_wait = false;
    uint32_t lite_rdata = 0;
    // statistics
    uint64_t read_beats = 0, write_beats = 0;

    bool chance(double p) {
        if (p <= 0) return false;
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        return (double)(rng >> 11) / 9007199254740992.0 < p;
    }
    void fail(const std::string& what) { if (error.empty()) error = what; }

    void check_burst(const char* kind, uint64_t addr, uint32_t len, uint32_t size, uint32_t burst) {
        char buf[200];
        uint32_t beats = len + 1;
        if (burst != 1) { snprintf(buf, sizeof buf, "%s burst at 0x%llx: burst type %u, not INCR", kind, (unsigned long long)addr, burst); fail(buf); }
        if ((1u << size) != (uint32_t)BEAT_BYTES) { snprintf(buf, sizeof buf, "%s burst at 0x%llx: size %u, not the bus width", kind, (unsigned long long)addr, size); fail(buf); }
        if (addr % BEAT_BYTES) { snprintf(buf, sizeof buf, "%s burst at 0x%llx: not aligned to a beat", kind, (unsigned long long)addr); fail(buf); }
        if (beats > MAX_BURST) { snprintf(buf, sizeof buf, "%s burst at 0x%llx: %u beats, more than %d", kind, (unsigned long long)addr, beats, MAX_BURST); fail(buf); }
        if ((addr >> 12) != ((addr + (uint64_t)beats * BEAT_BYTES - 1) >> 12)) { snprintf(buf, sizeof buf, "%s burst at 0x%llx of %u beats crosses a 4 KiB boundary", kind, (unsigned long long)addr, beats); fail(buf); }
    }

    bool in_mem(uint64_t byte_addr) { return byte_addr / 4 + DATA_WORDS <= mem.size(); }

    // One clock cycle (see the file comment).
    void step() {
        Vtop* t = top;
        // -- drive: DRAM side ----------------------------------------------------------
        t->m_axi_arready = !chance(stall);
        t->m_axi_awready = !chance(stall);
        t->m_axi_wready = !writes.empty() && !chance(stall);
        bool r_offer = !reads.empty() && reads.front().ready_at <= cycles && !chance(gap);
        t->m_axi_rvalid = r_offer;
        if (r_offer) {
            ReadBurst& b = reads.front();
            uint64_t a = b.addr + (uint64_t)b.beat * BEAT_BYTES;
            uint32_t w[DATA_WORDS > 2 ? DATA_WORDS : 2] = {0};
            bool ok = in_mem(a);
            if (ok) memcpy(w, &mem[a / 4], BEAT_BYTES);
            put(t->m_axi_rdata, w);
            t->m_axi_rresp = ok ? 0 : 3;
            t->m_axi_rlast = b.beat + 1 == b.beats;
            t->m_axi_rid = 0;
        }
        bool b_offer = !resps.empty() && resps.front().ready_at <= cycles;
        t->m_axi_bvalid = b_offer;
        t->m_axi_bresp = b_offer ? resps.front().resp : 0;
        t->m_axi_bid = 0;
        // -- drive: host side ----------------------------------------------------------
        t->s_axil_awvalid = aw_pending;
        t->s_axil_wvalid = w_pending;
        t->s_axil_bready = b_wait;
        t->s_axil_arvalid = ar_pending;
        t->s_axil_rready = r_wait;
        t->clk = 0;
        t->eval();
        // -- handshakes ----------------------------------------------------------------
        if (t->m_axi_arvalid && t->m_axi_arready) {
            uint64_t a = t->m_axi_araddr;
            check_burst("read", a, t->m_axi_arlen, t->m_axi_arsize, t->m_axi_arburst);
            reads.push_back({a, (uint32_t)t->m_axi_arlen + 1u, 0u, cycles + read_latency});
        }
        if (r_offer && t->m_axi_rready) {
            ReadBurst& b = reads.front();
            read_beats++;
            if (++b.beat == b.beats) reads.pop_front();
        }
        if (t->m_axi_awvalid && t->m_axi_awready) {
            uint64_t a = t->m_axi_awaddr;
            check_burst("write", a, t->m_axi_awlen, t->m_axi_awsize, t->m_axi_awburst);
            writes.push_back({a, (uint32_t)t->m_axi_awlen + 1u, 0u});
        }
        if (t->m_axi_wvalid && t->m_axi_wready) {
            WriteBurst& b = writes.front();
            uint64_t a = b.addr + (uint64_t)b.beat * BEAT_BYTES;
            uint32_t w[DATA_WORDS > 2 ? DATA_WORDS : 2];
            get(t->m_axi_wdata, w);
            uint64_t strb = t->m_axi_wstrb;
            bool ok = in_mem(a);
            if (ok) {
                uint8_t* bytes = (uint8_t*)&mem[a / 4];
                const uint8_t* src = (const uint8_t*)w;
                for (int i = 0; i < BEAT_BYTES; i++) if ((strb >> i) & 1) bytes[i] = src[i];
            }
            write_beats++;
            bool last = b.beat + 1 == b.beats;
            if ((bool)t->m_axi_wlast != last) fail("wlast on a beat that is not a burst's last (or missing on the last)");
            if (++b.beat == b.beats) {
                resps.push_back({cycles + write_latency, (uint8_t)(ok ? 0 : 3)});
                writes.pop_front();
            }
        }
        if (b_offer && t->m_axi_bready) resps.pop_front();
        if (aw_pending && t->s_axil_awready) aw_pending = false;
        if (w_pending && t->s_axil_wready) w_pending = false;
        if (b_wait && t->s_axil_bvalid) b_wait = false;
        if (ar_pending && t->s_axil_arready) ar_pending = false;
        if (r_wait && t->s_axil_rvalid) { lite_rdata = t->s_axil_rdata; r_wait = false; }
        // -- the edge --------------------------------------------------------------------
        t->clk = 1;
        t->eval();
        cycles++;
    }
};

extern "C" {

void* vsim_new(uint64_t mem_words, uint32_t read_latency, uint32_t write_latency, double gap,
               double stall, uint64_t seed) {
    Sim* s = new Sim;
    s->ctx = new VerilatedContext;
    s->top = new Vtop{s->ctx};
    s->mem.assign(mem_words, 0);
    s->read_latency = read_latency;
    s->write_latency = write_latency;
    s->gap = gap;
    s->stall = stall;
    s->rng ^= seed * 0x2545F4914F6CDD1Dull;
    s->top->rst = 1;
    for (int i = 0; i < 4; i++) s->step();
    s->top->rst = 0;
    s->step();
    return s;
}

void vsim_free(void* p) {
    Sim* s = (Sim*)p;
    s->top->final();
    delete s->top;
    delete s->ctx;
    delete s;
}

int vsim_mem_write(void* p, uint64_t word, const uint32_t* data, uint64_t n) {
    Sim* s = (Sim*)p;
    if (word + n > s->mem.size()) return -1;
    memcpy(&s->mem[word], data, n * 4);
    return 0;
}

int vsim_mem_read(void* p, uint64_t word, uint32_t* out, uint64_t n) {
    Sim* s = (Sim*)p;
    if (word + n > s->mem.size()) return -1;
    memcpy(out, &s->mem[word], n * 4);
    return 0;
}

// AXI4-Lite write; returns the response (0 OKAY) or -1 if it did not complete.
int vsim_lite_write(void* p, uint32_t addr, uint32_t data) {
    Sim* s = (Sim*)p;
    s->top->s_axil_awaddr = addr;
    s->top->s_axil_wdata = data;
    s->top->s_axil_wstrb = 0xF;
    s->aw_pending = s->w_pending = true;
    s->b_wait = true;
    uint32_t resp = 0;
    for (int i = 0; i < 1000; i++) {
        bool had_b = s->b_wait;
        resp = s->top->s_axil_bresp;
        s->step();
        if (had_b && !s->b_wait) return (int)resp;
    }
    return -1;
}

// AXI4-Lite read; *ok is 1 on an OKAY response.
uint32_t vsim_lite_read(void* p, uint32_t addr, int* ok) {
    Sim* s = (Sim*)p;
    s->top->s_axil_araddr = addr;
    s->ar_pending = true;
    s->r_wait = true;
    for (int i = 0; i < 1000; i++) {
        bool had_r = s->r_wait;
        uint32_t resp = s->top->s_axil_rresp;
        s->step();
        if (had_r && !s->r_wait) { *ok = resp == 0; return s->lite_rdata; }
    }
    *ok = 0;
    return 0;
}

// Run until irq is high; returns the cycles run, or -1 after max_cycles.
int64_t vsim_run_until_irq(void* p, uint64_t max_cycles) {
    Sim* s = (Sim*)p;
    uint64_t start = s->cycles;
    while (!s->top->irq) {
        if (s->cycles - start >= max_cycles) return -1;
        s->step();
    }
    return (int64_t)(s->cycles - start);
}

void vsim_run(void* p, uint64_t n) { Sim* s = (Sim*)p; for (uint64_t i = 0; i < n; i++) s->step(); }
uint64_t vsim_cycles(void* p) { return ((Sim*)p)->cycles; }
const char* vsim_error(void* p) { return ((Sim*)p)->error.c_str(); }
uint64_t vsim_read_beats(void* p) { return ((Sim*)p)->read_beats; }
uint64_t vsim_write_beats(void* p) { return ((Sim*)p)->write_beats; }

}
