//! The Lambda function API (`/2015-03-31/functions...`).

pub mod account;
pub mod alias;
pub mod code;
pub(crate) mod handlers;
pub mod layer;
pub mod model;
pub mod names;
pub mod ops;
pub mod policy;
pub mod tags;
pub mod url;
pub mod validate;

use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::Supervisor;

/// Control-plane routes; state and authentication are added by the caller.
pub fn routes() -> Router<Arc<Supervisor>> {
    use handlers::*;
    Router::new()
        .route(
            "/2015-03-31/functions",
            post(create_function).get(list_functions),
        )
        .route(
            "/2015-03-31/functions/",
            post(create_function).get(list_functions),
        )
        .route(
            "/2015-03-31/functions/{name}",
            get(get_function).delete(delete_function),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(get_configuration).put(update_configuration),
        )
        .route("/2015-03-31/functions/{name}/code", put(update_code))
        .route(
            "/2015-03-31/functions/{name}/versions",
            post(publish_version).get(list_versions),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            post(alias::create_alias).get(alias::list_aliases),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(alias::get_alias)
                .put(alias::update_alias)
                .delete(alias::delete_alias),
        )
        .route(
            "/2015-03-31/functions/{name}/policy",
            post(policy::add_permission).get(policy::get_policy),
        )
        .route(
            "/2015-03-31/functions/{name}/policy/{sid}",
            delete(policy::remove_permission),
        )
        .route(
            "/2016-08-19/account-settings",
            get(account::get_account_settings),
        )
        .route(
            "/2021-10-31/functions/{name}/url",
            post(url::create_url)
                .get(url::get_url)
                .put(url::update_url)
                .delete(url::delete_url),
        )
        .route("/2021-10-31/functions/{name}/urls", get(url::list_urls))
        .route("/2018-10-31/layers", get(layer::list_layers))
        .route(
            "/2018-10-31/layers/{name}/versions",
            post(layer::publish_layer_version).get(layer::list_layer_versions),
        )
        .route(
            "/2018-10-31/layers/{name}/versions/{version}",
            get(layer::get_layer_version).delete(layer::delete_layer_version),
        )
        .route(
            "/2017-03-31/tags/{arn}",
            get(tags::list_tags)
                .post(tags::tag_resource)
                .delete(tags::untag_resource),
        )
}
