//! `throwaway-pg`: starts a throwaway PostgreSQL cluster on a free loopback port, prints one JSON
//! line (`{"host","port","user","password"}`), and deletes it when stdin closes or on Ctrl-C.

use std::io::Read;

fn main() -> anyhow::Result<()> {
    let pg = lakebase_testkit::PgCluster::start()?;
    println!(
        "{{\"host\":\"{}\",\"port\":{},\"user\":\"{}\",\"password\":\"{}\"}}",
        pg.host(),
        pg.port(),
        pg.superuser(),
        pg.superuser_password()
    );
    // Runs until its parent closes our stdin (or kills us; the cluster then stays in /tmp).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(pg);
    Ok(())
}
