// temporary stand-in until the schematic module lands; not committed
#[derive(Debug, Clone)]
pub struct Schematic {
    pub y: String,
}
#[derive(Debug)]
pub enum SchematicError {
    TooLarge,
    Invalid(String),
}
pub fn parse(body: &[u8], _ct: Option<&str>) -> Result<Schematic, SchematicError> {
    if body.len() > 65536 {
        return Err(SchematicError::TooLarge);
    }
    if body.is_empty() {
        return Err(SchematicError::Invalid("EOF".into()));
    }
    Ok(Schematic {
        y: "customization: {}\n".into(),
    })
}
impl Schematic {
    pub fn canonical_yaml(&self) -> String {
        self.y.clone()
    }
    pub fn id(&self) -> String {
        crate::io::sha256_digest(self.y.as_bytes())[7..].to_string()
    }
    pub fn extra_kernel_args(&self) -> &[String] {
        &[]
    }
    pub fn meta(&self) -> Vec<(u8, String)> {
        vec![]
    }
    pub fn official_extensions(&self) -> &[String] {
        &[]
    }
    pub fn bootloader(&self) -> Option<&str> {
        None
    }
    pub fn secureboot_enroll_keys(&self) -> Option<&str> {
        None
    }
    pub fn include_well_known_certificates(&self) -> bool {
        false
    }
    pub fn sector_size(&self) -> Option<u64> {
        None
    }
    pub fn overlay(&self) -> Option<&()> {
        None
    }
    pub fn embedded_machine_configuration(&self) -> Option<&str> {
        None
    }
}
