//! Shared pieces of forkprof's side-by-side benchmarks: the workloads (the same stacks, labels
//! and values go to forkprof and to libdd-profiling), exporters that discard or stall, and
//! CPU-time and memory probes.
//!
//! The criterion bench (`benches/compare.rs`) and the bins (`fork_overhead`, `host_overhead`,
//! `peak_rss`) all take their inputs from here so that a ratio compares like with like.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use forkprof::export::{Delivered, ExportContext, ExportFailure};
use forkprof::SampleType;
use forkprof::{
    Compression, Config, EncodedProfile, Exporter, ExporterConfig, ExporterFactory, Frame,
    FrameIds, Label, Profiler, Sample, StrId,
};
use forkprof_core::profile::{ProfFrame, ProfLabel, ProfileBuilder};
use libdd_profiling::api;
use libdd_profiling::collections::identifiable::StringId as DdStringId;
use libdd_profiling::collections::string_storage::ManagedStringStorage;
use libdd_profiling::internal::interning_api::{Generation, GenerationalId};
use libdd_profiling::internal::Profile as DdProfile;
use std::sync::Mutex;

pub use libdd_profiling::collections::string_table::wordpress_test_data::WORDPRESS_STRINGS;

/// Frames per stack in every per-sample workload (the stack depth the project's per-sample goals are set for).
pub const DEPTH: usize = 18;
/// Samples per criterion iteration.
pub const BATCH: usize = 1000;
/// Distinct stacks the per-sample workloads cycle through (a host sees the same stacks again
/// and again; both profilers aggregate them).
pub const STACKS: usize = 10;
/// Function names the per-sample workloads draw from.
const NAMES: usize = 40;

pub const SAMPLE_TYPES: [(&str, &str); 2] = [("sample", "count"), ("wall-time", "nanoseconds")];
pub const VALUES: [i64; 2] = [1, 10_000_000];
pub const LABEL_STR_KEY: &str = "thread name";
pub const LABEL_NUM_KEY: &str = "thread id";

/// One stack frame as text, owned so both profilers can borrow it.
#[derive(Clone, Debug)]
pub struct TextFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

/// The per-sample workload: `STACKS` stacks of `DEPTH` frames and their two labels.
pub struct Workload {
    pub stacks: Vec<Vec<TextFrame>>,
    pub thread_names: Vec<String>,
}

impl Workload {
    pub fn new() -> Workload {
        let names: Vec<String> = (0..NAMES)
            .map(|i| format!("App\\Http\\Controllers\\Handler{}::process_request", i))
            .collect();
        let files: Vec<String> = (0..8)
            .map(|i| format!("/var/www/app/src/Http/Controllers/Module{i}.php"))
            .collect();
        let stacks = (0..STACKS)
            .map(|s| {
                (0..DEPTH)
                    .map(|d| {
                        let f = (s * 3 + d * 5 + s * d) % NAMES;
                        TextFrame {
                            function: names[f].clone(),
                            file: files[f % files.len()].clone(),
                            line: (10 + f * 7 + d) as u32,
                        }
                    })
                    .collect()
            })
            .collect();
        let thread_names = (0..4).map(|i| format!("worker-{i}")).collect();
        Workload {
            stacks,
            thread_names,
        }
    }

    pub fn frames(&self, s: usize) -> Vec<Frame<'_>> {
        self.stacks[s]
            .iter()
            .map(|f| Frame::new(&f.function, &f.file, f.line))
            .collect()
    }

    pub fn thread_name(&self, i: usize) -> &str {
        &self.thread_names[i % self.thread_names.len()]
    }

    pub fn thread_id(i: usize) -> i64 {
        1000 + (i % 4) as i64
    }

    /// The stacks as forkprof process-wide ids (interned once; later calls are hits).
    pub fn frame_ids(&self) -> Vec<Vec<FrameIds>> {
        self.stacks
            .iter()
            .map(|st| {
                st.iter()
                    .map(|f| FrameIds {
                        function: intern(&f.function),
                        file: intern(&f.file),
                        line: f.line,
                    })
                    .collect()
            })
            .collect()
    }

    /// The stack of sample `i` as libdatadog locations (what `try_add_sample` takes).
    pub fn dd_locations(&self, s: usize) -> Vec<api::Location<'_>> {
        self.stacks[s]
            .iter()
            .map(|f| api::Location {
                function: api::Function {
                    name: &f.function,
                    system_name: "",
                    filename: &f.file,
                },
                line: f.line as i64,
                ..Default::default()
            })
            .collect()
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload::new()
    }
}

pub fn intern(s: &str) -> StrId {
    forkprof::intern(s).expect("interning a benchmark name")
}

/// Adds sample `i` of the workload to a libdatadog profile through `try_add_sample` (strings as
/// text), building the `api::Sample` as a host must.
#[inline]
pub fn dd_add_text(p: &mut DdProfile, w: &Workload, i: usize, ts: Option<i64>) {
    let s = i % STACKS;
    let sample = api::Sample {
        locations: w.dd_locations(s),
        values: &VALUES,
        labels: vec![
            api::Label {
                key: LABEL_STR_KEY,
                str: w.thread_name(i),
                ..Default::default()
            },
            api::Label {
                key: LABEL_NUM_KEY,
                num: Workload::thread_id(i),
                ..Default::default()
            },
        ],
    };
    let ts = ts.and_then(std::num::NonZeroI64::new);
    p.try_add_sample(sample, ts).expect("libdatadog add");
}

/// Records sample `i` of the workload through forkprof (strings as text).
#[inline]
pub fn fp_record_text(p: &Profiler, frames: &[Vec<Frame<'_>>], w: &Workload, i: usize) {
    let labels = [
        Label::str(LABEL_STR_KEY, w.thread_name(i)),
        Label::num(LABEL_NUM_KEY, Workload::thread_id(i)),
    ];
    p.record(&Sample::new(&frames[i % STACKS], &VALUES).labels(&labels))
        .expect("record");
}

/// [`fp_record_text`] with a span attached: the host's two labels and the span's four, side
/// by side on the stack ([`forkprof::TracedLabels`]).
#[inline]
pub fn fp_record_traced(p: &Profiler, frames: &[Vec<Frame<'_>>], w: &Workload, i: usize) {
    let host = [
        Label::str(LABEL_STR_KEY, w.thread_name(i)),
        Label::num(LABEL_NUM_KEY, Workload::thread_id(i)),
    ];
    let span = forkprof::TraceContext {
        trace_id: 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
        span_id: 0x00f0_67aa_0ba9_0000 + (i % 64) as u64,
        local_root_span_id: 0x00f0_67aa_0ba9_0000 + (i % 8) as u64,
    };
    let labels = forkprof::TracedLabels::<8>::new(&host, &span).expect("2 + 4 labels fit in 8");
    p.record(&Sample::new(&frames[i % STACKS], &VALUES).labels(labels.as_slice()))
        .expect("record");
}

/// Records sample `i` through forkprof with pre-interned frames.
#[inline]
pub fn fp_record_ids(p: &Profiler, ids: &[Vec<FrameIds>], w: &Workload, i: usize) {
    let labels = [
        Label::str(LABEL_STR_KEY, w.thread_name(i)),
        Label::num(LABEL_NUM_KEY, Workload::thread_id(i)),
    ];
    p.record(&Sample::with_ids(&ids[i % STACKS], &VALUES).labels(&labels))
        .expect("record");
}

pub fn dd_sample_types() -> Vec<api::ValueType<'static>> {
    SAMPLE_TYPES
        .iter()
        .map(|&(t, u)| api::ValueType::new(t, u))
        .collect()
}

pub fn dd_profile() -> DdProfile {
    DdProfile::try_new(&dd_sample_types(), None).expect("libdatadog profile")
}

pub fn fp_builder() -> ProfileBuilder {
    let types: Vec<SampleType> = SAMPLE_TYPES
        .iter()
        .map(|&(t, u)| SampleType::new(t, u))
        .collect();
    ProfileBuilder::new(&types, None, SystemTime::now())
}

/// What the collector does per text sample, on this thread: intern every name into the
/// profile's table, then aggregate.
pub fn fp_builder_add_text(
    b: &mut ProfileBuilder,
    w: &Workload,
    frames: &mut Vec<ProfFrame>,
    i: usize,
    ts: Option<i64>,
) {
    frames.clear();
    for f in &w.stacks[i % STACKS] {
        frames.push(ProfFrame {
            function: b.intern_bytes(f.function.as_bytes()),
            file: b.intern_bytes(f.file.as_bytes()),
            line: f.line,
        });
    }
    let labels = [
        ProfLabel {
            key: b.intern(LABEL_STR_KEY),
            str: b.intern_bytes(w.thread_name(i).as_bytes()),
            num: 0,
            num_unit: 0,
        },
        ProfLabel {
            key: b.intern(LABEL_NUM_KEY),
            str: 0,
            num: Workload::thread_id(i),
            num_unit: 0,
        },
    ];
    b.add(frames.iter().copied(), &VALUES, &labels, ts);
}

/// libdatadog's names interned beforehand in its process-wide `ManagedStringStorage`.
pub struct DdManaged {
    storage: Arc<Mutex<ManagedStringStorage>>,
    stacks: Vec<Vec<api::StringIdLocation>>,
    str_key: api::ManagedStringId,
    num_key: api::ManagedStringId,
    thread_names: Vec<api::ManagedStringId>,
}

impl DdManaged {
    pub fn new(w: &Workload) -> DdManaged {
        let storage = Arc::new(Mutex::new(ManagedStringStorage::new()));
        let id = |s: &str| {
            api::ManagedStringId::new(storage.lock().unwrap().intern(s).expect("dd intern"))
        };
        let stacks = w
            .stacks
            .iter()
            .map(|st| {
                st.iter()
                    .map(|f| api::StringIdLocation {
                        function: api::StringIdFunction {
                            name: id(&f.function),
                            system_name: api::ManagedStringId::empty(),
                            filename: id(&f.file),
                        },
                        line: f.line as i64,
                        ..Default::default()
                    })
                    .collect()
            })
            .collect();
        let str_key = id(LABEL_STR_KEY);
        let num_key = id(LABEL_NUM_KEY);
        let thread_names = (0..4).map(|i| id(w.thread_name(i))).collect();
        DdManaged {
            storage,
            stacks,
            str_key,
            num_key,
            thread_names,
        }
    }

    pub fn profile(&self) -> DdProfile {
        DdProfile::try_with_string_storage(&dd_sample_types(), None, self.storage.clone())
            .expect("dd profile")
    }

    #[inline]
    pub fn add(&self, p: &mut DdProfile, i: usize) {
        let sample = api::StringIdSample {
            locations: self.stacks[i % STACKS].clone(),
            values: &VALUES,
            labels: vec![
                api::StringIdLabel {
                    key: self.str_key,
                    str: self.thread_names[i % 4],
                    ..Default::default()
                },
                api::StringIdLabel {
                    key: self.num_key,
                    num: Workload::thread_id(i),
                    ..Default::default()
                },
            ],
        };
        p.add_string_id_sample(sample, None).expect("dd add");
    }
}

/// libdatadog's per-profile interning API with every string interned beforehand (the
/// functions, locations, stack, labels and sample are still interned per sample, as a host
/// that keeps only string ids must).
pub struct DdInterned<'w> {
    pub w: &'w Workload,
}

/// `GenerationalId` is neither `Copy` nor `Clone` in Rust (the FFI copies it as a plain C
/// struct), so keep the raw string ids and rebuild the handle per use, which costs nothing.
pub struct DdInternedProfile {
    p: DdProfile,
    gen: Generation,
    funcs: Vec<Vec<(DdStringId, DdStringId, i64)>>,
    str_key: DdStringId,
    num_key: DdStringId,
    thread_names: Vec<DdStringId>,
    locs: Vec<GenerationalId<libdd_profiling::internal::LocationId>>,
}

impl DdInterned<'_> {
    pub fn profile(&self) -> DdInternedProfile {
        let mut p = dd_profile();
        let gen = p.get_generation().expect("dd generation");
        let mut s = |x: &str| {
            p.intern_string(x)
                .expect("dd intern")
                .get(gen)
                .expect("dd generation")
        };
        let funcs = self
            .w
            .stacks
            .iter()
            .map(|st| {
                st.iter()
                    .map(|f| (s(&f.function), s(&f.file), f.line as i64))
                    .collect()
            })
            .collect();
        let str_key = s(LABEL_STR_KEY);
        let num_key = s(LABEL_NUM_KEY);
        let thread_names = (0..4).map(|i| s(self.w.thread_name(i))).collect();
        DdInternedProfile {
            p,
            gen,
            funcs,
            str_key,
            num_key,
            thread_names,
            locs: Vec::with_capacity(DEPTH),
        }
    }
}

impl DdInternedProfile {
    #[inline]
    pub fn add(&mut self, i: usize) {
        let p = &mut self.p;
        let g = |id| GenerationalId::new(id, self.gen);
        self.locs.clear();
        for &(name, file, line) in &self.funcs[i % STACKS] {
            let f = p
                .intern_function(g(name), DdProfile::INTERNED_EMPTY_STRING, g(file))
                .expect("dd function");
            self.locs
                .push(p.intern_location(None, f, 0, line).expect("dd location"));
        }
        let st = p.intern_stacktrace(&self.locs).expect("dd stack");
        let l1 = p
            .intern_label_str(g(self.str_key), g(self.thread_names[i % 4]))
            .expect("dd label");
        let l2 = p
            .intern_label_num(
                g(self.num_key),
                Workload::thread_id(i),
                DdProfile::INTERNED_EMPTY_STRING,
            )
            .expect("dd label");
        let ls = p.intern_labelset(&[l1, l2]).expect("dd labelset");
        p.intern_sample(st, &VALUES, ls, None).expect("dd sample");
    }
}

/// An exporter that accepts and discards every profile (the benchmarks measure the profiler,
/// not a disk or a network).
#[derive(Debug)]
pub struct DiscardFactory(pub Compression);

struct Discard;

impl Exporter for Discard {
    fn export(
        &mut self,
        profile: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        Ok(Delivered {
            bytes: profile.bytes.len() as u64,
            retries: 0,
        })
    }
}

impl ExporterFactory for DiscardFactory {
    fn compression(&self) -> Compression {
        self.0
    }
    fn create(&self, _ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        Ok(Box::new(Discard))
    }
}

/// An exporter whose upload never completes: it connects to a loopback listener that never
/// accepts and waits for a reply that never comes, like an upload stuck on a dead network.
#[derive(Debug)]
pub struct StalledFactory {
    pub addr: std::net::SocketAddr,
}

struct Stalled {
    addr: std::net::SocketAddr,
}

impl Exporter for Stalled {
    fn export(
        &mut self,
        _profile: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        // The kernel completes the handshake from the listen backlog; nobody ever reads or
        // writes the other end, so this read blocks until the process exits.
        let mut stream = TcpStream::connect(self.addr).map_err(|e| ExportFailure {
            reason: e.to_string(),
            ..Default::default()
        })?;
        let mut byte = [0u8; 1];
        let _ = stream.read(&mut byte);
        Err(ExportFailure {
            reason: "stalled upload returned".into(),
            ..Default::default()
        })
    }
}

impl ExporterFactory for StalledFactory {
    fn compression(&self) -> Compression {
        Compression::Zstd
    }
    fn create(&self, _ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        Ok(Box::new(Stalled { addr: self.addr }))
    }
}

/// A loopback listener that is never accepted from, kept alive by the caller.
pub fn dead_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

/// A profiler configured like the benchmarks need: the workload's sample types, a long
/// period (profiles are closed by `flush`), a buffer large enough that no sample is dropped
/// between two flushes, and `exporter`.
pub fn start_profiler(exporter: Arc<dyn ExporterFactory>, buffer: usize) -> Profiler {
    let mut b = Config::builder("forkprof-bench")
        .period(Duration::from_secs(3600))
        .buffer_capacity(buffer)
        .exporter(ExporterConfig::Custom(exporter));
    for (t, u) in SAMPLE_TYPES {
        b = b.sample_type(t, u);
    }
    Profiler::start(b.build().expect("bench config")).expect("profiler start")
}

/// The kernel thread id of this process's thread named `name` (from /proc/self/task/*/comm,
/// where the kernel keeps the first 15 bytes of a name).
pub fn thread_id_by_name(name: &str) -> Option<i32> {
    let name = &name[..name.len().min(15)];
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    for e in dir.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            return e.file_name().to_str()?.parse().ok();
        }
    }
    None
}

/// CPU time consumed so far by thread `tid` of this process, in nanoseconds. Linux encodes a
/// per-thread CPU clock as `(!tid << 3) | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED`, which is how
/// glibc's `pthread_getcpuclockid` builds it; this lets us read a profiler thread we have no
/// handle to.
pub fn thread_cpu_ns(tid: i32) -> u64 {
    let clock = ((!tid) << 3) | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; an invalid clock id makes the call fail, not UB.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime on thread {tid}'s CPU clock");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time of the whole process (every thread), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The `q`-quantile (0..=1) of sorted `v`.
pub fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

pub fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

pub const UNIQUE_FUNCTIONS: usize = 5_000;
pub const UNIQUE_FILES: usize = 500;

/// The names of the large-profile workloads (peak RSS, fork with a profile in progress):
/// stacks of `DEPTH` frames drawn from 5,000 function names, every stack unique.
pub struct Names {
    pub functions: Vec<String>,
    pub files: Vec<String>,
    pub threads: Vec<String>,
}

impl Names {
    pub fn new() -> Names {
        Names {
            functions: (0..UNIQUE_FUNCTIONS)
                .map(|i| format!("App\\Module{}\\Service{}::handle_{}", i % 50, i % 300, i))
                .collect(),
            files: (0..UNIQUE_FILES)
                .map(|i| format!("/srv/app/src/Module{}/Service{}.php", i % 50, i))
                .collect(),
            threads: (0..8).map(|i| format!("worker-{i}")).collect(),
        }
    }

    /// Function indexes of stack `i`, leaf first. Frames 0 and 1 spell `i` in base 5,000, so
    /// every stack is unique; the rest are pseudo-random.
    pub fn stack(&self, i: usize, out: &mut [usize; DEPTH]) {
        out[0] = i % UNIQUE_FUNCTIONS;
        out[1] = i / UNIQUE_FUNCTIONS;
        let mut x = i as u64 ^ 0x9e37_79b9_7f4a_7c15;
        for slot in out.iter_mut().skip(2) {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *slot = ((z ^ (z >> 31)) % UNIQUE_FUNCTIONS as u64) as usize;
        }
    }

    pub fn file(&self, f: usize) -> &str {
        &self.files[f % UNIQUE_FILES]
    }

    /// The line of function `f` at depth `d`: a function calls out from several lines, so a
    /// profile has many more locations than functions, as real ones do.
    pub fn line(f: usize, d: usize) -> u32 {
        ((f * 7 + d * 13) % 500) as u32 + 1
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

/// A builder in the memory the collector's is made of (fork-local regions).
pub fn fp_builder_fork_local(types: &[SampleType]) -> ProfileBuilder {
    ProfileBuilder::new_in(
        types,
        None,
        SystemTime::now(),
        forkprof_core::Memory::fork_local(forkprof::platform()),
    )
}

/// Records unique stack `i` of `n` through the profiler, waiting and recording it again
/// whenever the buffer was full, so that every stack lands in the profile exactly once.
pub fn record_unique(p: &Profiler, n: &Names, i: usize) {
    let mut idx = [0; DEPTH];
    n.stack(i, &mut idx);
    let mut frames = [Frame::new("", "", 0); DEPTH];
    for (d, (f, &x)) in frames.iter_mut().zip(&idx).enumerate() {
        *f = Frame::new(&n.functions[x], n.file(x), Names::line(x, d));
    }
    let labels = [
        Label::str(LABEL_STR_KEY, &n.threads[i % 8]),
        Label::num(LABEL_NUM_KEY, Workload::thread_id(i)),
    ];
    loop {
        let before = p.stats().samples_dropped;
        p.record(&Sample::new(&frames, &VALUES).labels(&labels))
            .expect("record");
        if p.stats().samples_dropped == before {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
