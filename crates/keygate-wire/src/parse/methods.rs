//! Access method requests.

use keygate_app::methods::EncodeCard;
use keygate_domain::validate::{self};
use keygate_domain::{Error, Resource};
use keygate_proto::v1;

use super::{IntoCommand, claim};

impl IntoCommand for v1::EncodeAccessMethodRequest {
    type Command = EncodeCard;

    fn into_command(self) -> Result<EncodeCard, Error> {
        let fingerprint = v1::EncodeAccessMethodRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::EncodeAccessMethodRequest {
            request_id,
            access_method_id,
            acs_encoder_id,
        } = self;
        let request_id = validate::request_id(&request_id).map_err(|v| Error::InvalidArgument {
            violations: vec![v],
        })?;
        let access_method_id = validate::id(
            "access_method_id",
            &access_method_id,
            Resource::AccessMethod,
        )?;
        let acs_encoder_id = validate::id("acs_encoder_id", &acs_encoder_id, Resource::Encoder)?;
        Ok(EncodeCard {
            idem: claim("EncodeAccessMethod", request_id, &fingerprint),
            access_method_id,
            acs_encoder_id,
        })
    }
}
