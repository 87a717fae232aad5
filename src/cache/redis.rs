pub struct RedisCache;
impl RedisCache {
    pub async fn connect(_u: &str, _t: std::time::Duration) -> anyhow::Result<crate::cache::none::NoCache> { anyhow::bail!("todo") }
}
