//! Address resolution benchmark: the address a sender uses for an RPC target (fanout, server,
//! anycast) and a notification, in each addressing kind. This runs once per call, cast and
//! notification before the cached sender link is looked up by address.
//! Run with `cargo bench -p driver --bench address`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use driver::address::{Addresser, AddressingKind};
use driver::{AmqpOptions, Target};

fn bench(c: &mut Criterion) {
    let opts = AmqpOptions::default();
    let targets = [
        ("anycast", Target::topic("compute")),
        ("server", Target::topic("compute").with_server("host-0042")),
        ("fanout", Target::topic("compute").with_fanout(true)),
        (
            "exchange",
            Target::topic("compute")
                .with_exchange("nova")
                .with_server("host-0042"),
        ),
    ];
    let mut g = c.benchmark_group("address");
    for kind in [
        AddressingKind::Legacy,
        AddressingKind::Routable,
        AddressingKind::Rabbitmq,
    ] {
        let a = Addresser::new(kind, &opts, "openstack", Some("vhost"));
        for (name, t) in &targets {
            g.bench_function(format!("{}/{name}", kind.as_str()), |b| {
                b.iter(|| black_box(a.resolve(black_box(t))))
            });
        }
        g.bench_function(format!("{}/notify", kind.as_str()), |b| {
            b.iter(|| black_box(a.notify(black_box("notifications"), black_box("info"))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
