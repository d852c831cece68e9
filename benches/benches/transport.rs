//! Transport microbenchmarks: frames over loopback through the runtime's
//! gRPC links (`grpc_1hop`, `grpc_3hop`: credits, acks, decode checks and
//! all) next to a raw-TCP baseline moving the same bytes in the same run
//! (`tcp_1hop`, `tcp_3hop`), and the same gRPC links over mutual TLS
//! (`grpc_tls_1hop`, `grpc_tls_3hop`). Throughput is payload bytes; each
//! sample sends a batch and waits until the far end has taken every frame.

/// The allocator the `streamfuse` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamfuse_benches::transport::{GrpcChain, TcpChain, Tls, shape_for};

/// Payload sizes: 64 KiB, 1 MiB and one 1280x720 f32 frame.
const PAYLOADS: &[(&str, usize)] = &[
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
    ("3.6864MB", 1280 * 720 * 4),
];

fn bench(c: &mut Criterion) {
    streamfuse::sys::alloc::keep_freed_memory();
    let tls = Tls::generate();
    let mut g = c.benchmark_group("transport");
    for &hops in &[1usize, 3] {
        for &(name, bytes) in PAYLOADS {
            g.throughput(Throughput::Bytes(bytes as u64));
            let mut tcp = TcpChain::new(bytes, hops);
            g.bench_function(BenchmarkId::new(format!("tcp_{hops}hop"), name), |b| {
                b.iter_custom(|n| tcp.send(n));
            });
            let mut grpc = GrpcChain::new(shape_for(bytes), hops);
            g.bench_function(BenchmarkId::new(format!("grpc_{hops}hop"), name), |b| {
                b.iter_custom(|n| grpc.send(n));
            });
            let mut secure = GrpcChain::with_tls(shape_for(bytes), hops, Some(&tls));
            g.bench_function(BenchmarkId::new(format!("grpc_tls_{hops}hop"), name), |b| {
                b.iter_custom(|n| secure.send(n));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
