pub struct MongoMetaStore;
impl MongoMetaStore {
    pub async fn connect(_url: &str, _db: &str) -> anyhow::Result<crate::meta::embedded::EmbeddedMetaStore> { anyhow::bail!("todo") }
}
