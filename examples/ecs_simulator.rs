//! The tests' ECS simulator as a process, for `make emulator` and `make demo`: it listens on a
//! port, forwards every call to moto, and answers as ECS would where moto cannot (a service's
//! tasks start, report healthy, fail; deployments roll out; the service says why in its events).
//!
//! `ecs_simulator <listen address> <moto endpoint>`. `SIM_SCRIPTS` scripts services, separated by
//! `;`: `<cluster>/<service>=slow` (tasks take a few looks to become healthy) or
//! `<cluster>/<service>=pull-error:<image>` (the image cannot be pulled). Unscripted services'
//! tasks are up and healthy at once.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use support::ecs_sim::{self, Fate, Script};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(moto)) = (args.next(), args.next()) else {
        eprintln!("usage: ecs_simulator <listen address, e.g. 127.0.0.1:5000> <moto endpoint>");
        std::process::exit(2);
    };
    // The support code finds moto through this variable instead of starting its own.
    std::env::set_var("MOTO_ENDPOINT", &moto);
    for entry in std::env::var("SIM_SCRIPTS").unwrap_or_default().split(';') {
        let Some((key, how)) = entry.trim().split_once('=') else {
            continue;
        };
        let Some((cluster, service)) = key.split_once('/') else {
            eprintln!("SIM_SCRIPTS: {key} is not <cluster>/<service>");
            std::process::exit(2);
        };
        let script = match how.split_once(':') {
            None if how == "slow" => Script::of(vec![Fate::Up { ticks: 3 }]),
            Some(("pull-error", image)) => Script::of(vec![ecs_sim::pull_error(image)]),
            _ => {
                eprintln!("SIM_SCRIPTS: {how} is not slow or pull-error:<image>");
                std::process::exit(2);
            }
        };
        ecs_sim::script(cluster, service, script);
    }
    let proxy = support::Proxy::start_at(&listen, vec![]).await;
    println!("ECS simulator on {} (moto at {moto})", proxy.endpoint);
    std::future::pending::<()>().await
}
