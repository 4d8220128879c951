//! `get`: one sandbox as the API shows it.

use crate::model::Sandbox;

use crate::{view, Caller, Error, Service};

impl Service {
    pub fn get(&self, caller: &Caller, id_or_name: &str) -> Result<Sandbox, Error> {
        view::sandbox(&self.resolve(caller, id_or_name)?)
    }
}
